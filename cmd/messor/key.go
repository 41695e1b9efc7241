package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

func newKeyCmd(g *globals) *cobra.Command {
	var generate bool
	cmd := &cobra.Command{
		Use:   "key [NAME]",
		Short: "Print the line that lets this carrier's key do SFTP and nothing else on a host",
		Long: `Print this carrier's public key as a line for a host's ~/.ssh/authorized_keys:

  restrict,command="internal-sftp" ssh-ed25519 AAAA... comment

With that line a lost or stolen carrier's key opens SFTP on the host and
nothing else: no shell, no commands, no forwarding.

The key is ~/.ssh/id_messor_ed25519 if it exists (messor offers it before any
other key), else NAME's IdentityFile from ~/.ssh/config, else ~/.ssh/id_ed25519,
id_ecdsa or id_rsa. --generate makes ~/.ssh/id_messor_ed25519, a key for messor
alone (without passphrase: messor runs unattended; encrypt the carrier's disk).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var files []string
			if len(args) == 1 {
				cfg, _ := discovery.LoadSSHConfig(g.home)
				h, err := cfg.Resolve(args[0])
				if err != nil {
					return usageErr("%w", err)
				}
				files = h.IdentityFiles
			}
			k, err := g.carrierKey(generate, files)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, k.AuthorizedLine())
			g.explainKey(k)
			return nil
		},
	}
	cmd.Flags().BoolVar(&generate, "generate", false, "make ~/.ssh/id_messor_ed25519, a key for messor alone (never replaces one)")
	return cmd
}

func (g *globals) carrierKey(generate bool, files []string) (*carrier.CarrierKey, error) {
	if !generate {
		k, err := carrier.FindKey(g.home, files)
		if errors.Is(err, carrier.ErrNoKey) {
			return nil, usageErr("%w; run messor key --generate to make one for messor alone", err)
		}
		return k, err
	}
	host, _ := os.Hostname()
	k, err := carrier.GenerateKey(g.home, "messor@"+host)
	if errors.Is(err, fs.ErrExist) {
		return nil, usageErr("%s exists; messor key prints its line (remove the file first to make a new key)", carrier.DedicatedKeyFile(g.home))
	}
	if err != nil {
		return nil, &exitError{exitFailed, err}
	}
	fmt.Fprintf(g.stderr, "messor: made %s (mode 0600) and %s.pub; messor offers it before any other key\n", k.File, k.File)
	return k, nil
}

// explainKey says on stderr what the printed line grants and gives up.
func (g *globals) explainKey(k *carrier.CarrierKey) {
	fmt.Fprintf(g.stderr, `messor: the line above is %s's public key. Added to a host's ~/.ssh/authorized_keys
(or the messor agent's), it lets this key do SFTP there and nothing else: no shell, no commands,
no forwarding (so the host cannot be a ProxyJump hop for it). What it gives up: on a stock sshd
host messor cannot hash files there (sha256sum over a command), so it verifies every upload by
reading it back, which costs the upload's size again in download; a host running messor agent
still hashes for it. An agent confines the key to its messor/ directory; a stock sshd lets SFTP
reach the whole account, ~/.ssh/authorized_keys included (README, "Threat model").
`, k.File)
	if k.NeedsAgent {
		fmt.Fprintf(g.stderr, "messor: %s has a passphrase: messor uses it only through ssh-agent\n", k.File)
	}
	if !k.Dedicated {
		fmt.Fprintf(g.stderr, `messor: warning: %s is a general-purpose key: wherever it is authorized without
these options, whoever holds this carrier gets a shell. messor key --generate makes a key for
messor alone (%s).
`, k.File, carrier.DedicatedKeyFile(g.home))
	}
}
