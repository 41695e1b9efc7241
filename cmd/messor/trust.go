package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

func newTrustCmd(g *globals) *cobra.Command {
	var fingerprint string
	var yes bool
	cmd := &cobra.Command{
		Use:   "trust NAME",
		Short: "Show a host's key fingerprint and pin it, so the carrier will talk to it",
		Long: `Look NAME up (an agent on the LAN over mDNS, else ~/.ssh/config), show the
fingerprint of the host key it presents, and pin it: agents in
~/.config/messor/known_agents, other hosts in their known_hosts file.

Compare the fingerprint with the one the host shows (an agent prints it when it
starts) before you accept. With --fingerprint the key is pinned only if it
matches, without asking.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			hs, err := g.findHosts(cmd.Context())
			if err != nil {
				return err
			}
			var h discovery.Host
			found := false
			for _, a := range hs.agents() {
				if a.Name == name {
					h, found = a, true
				}
			}
			if !found {
				h, err = hs.cfg.Resolve(name)
				if err != nil {
					return usageErr("%w", err)
				}
			}
			key, remote, err := carrier.FetchHostKey(cmd.Context(), h, g.connectTimeout)
			if err != nil {
				return &exitError{exitFailed, err}
			}
			fp := ssh.FingerprintSHA256(key)
			fmt.Fprintf(g.stdout, "host %s (%s, %s) presents %s key %s\n", name, h.Addr(), h.Source, key.Type(), fp)
			if h.Fingerprint != "" && h.Fingerprint != fp {
				return &exitError{exitFailed, fmt.Errorf("host %s: advertised fingerprint %s but presents %s: refusing", name, h.Fingerprint, fp)}
			}
			// Already pinned?
			err = carrier.HostKeyPolicy(h, false)(h.KnownHostsName(), remote, key)
			var uk *carrier.UnknownHostKeyError
			switch {
			case err == nil:
				fmt.Fprintln(g.stdout, "already trusted")
				return nil
			case !errors.As(err, &uk):
				return &exitError{exitFailed, err}
			}
			switch {
			case fingerprint != "":
				if fingerprint != fp {
					return &exitError{exitFailed, fmt.Errorf("host %s presents %s, not %s: not trusted", name, fp, fingerprint)}
				}
			case yes:
			default:
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return usageErr("not a terminal: confirm with --fingerprint %s or --yes", fp)
				}
				fmt.Fprintf(g.stdout, "Trust this key for %s? [y/N] ", name)
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return &exitError{exitFailed, errors.New("not trusted")}
				}
			}
			if err := carrier.AppendKnownHost(h.KnownHostsFiles[0], h.KnownHostsName(), key); err != nil {
				return &exitError{exitFailed, fmt.Errorf("host %s: pin key: %w", name, err)}
			}
			fmt.Fprintf(g.stdout, "trusted %s: pinned in %s\n", name, h.KnownHostsFiles[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&fingerprint, "fingerprint", "", "pin only if the host presents this fingerprint (SHA256:...)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "pin without asking")
	return cmd
}
