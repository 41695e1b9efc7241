package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/messor-sync/messor/carrier"
)

func newTrustCmd(g *globals) *cobra.Command {
	var fingerprint string
	var yes bool
	cmd := &cobra.Command{
		Use:   "trust NAME",
		Short: "Show a host's key fingerprint and pin it, so the carrier will talk to it",
		Long: `Look NAME up (a host you configured in the hosts file or ~/.ssh/config,
else an agent on the LAN over mDNS, else ~/.ssh/config's defaults), show the
fingerprint of the host key it presents, and pin it: agents in
~/.config/messor/known_agents, other hosts in their known_hosts file.

Compare the fingerprint with the one the host shows (an agent prints it when it
starts) before you accept. With --fingerprint the key is pinned only if it
matches, without asking.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			f, _, err := g.find(cmd.Context())
			if err != nil {
				return err
			}
			defer f.Close()
			h, err := f.ForTrust(name)
			if err != nil {
				return &exitError{exitFailed, err}
			}
			k, err := carrier.CheckHostKey(cmd.Context(), h, g.connectTimeout, fingerprint)
			if k != nil {
				fmt.Fprintf(g.stdout, "host %s (%s, %s) presents %s key %s\n", name, h.Addr(), h.Source, k.Key.Type(), k.Fingerprint)
			}
			switch {
			case err != nil:
				return &exitError{exitFailed, err}
			case k.Pinned:
				fmt.Fprintln(g.stdout, "already trusted")
				return nil
			case fingerprint == "" && !yes:
				if err := confirm(g, name, k.Fingerprint); err != nil {
					return err
				}
			}
			file, err := k.Pin()
			if err != nil {
				return &exitError{exitFailed, err}
			}
			fmt.Fprintf(g.stdout, "trusted %s: pinned in %s\n", name, file)
			return nil
		},
	}
	cmd.Flags().StringVar(&fingerprint, "fingerprint", "", "pin only if the host presents this fingerprint (SHA256:...)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "pin without asking")
	return cmd
}

// confirm asks on the terminal whether to trust fp for name.
func confirm(g *globals, name, fp string) error {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return usageErr("not a terminal: confirm with --fingerprint %s or --yes", fp)
	}
	fmt.Fprintf(g.stdout, "Trust this key for %s? [y/N] ", name)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return &exitError{exitFailed, carrier.ErrNotTrusted}
	}
	return nil
}
