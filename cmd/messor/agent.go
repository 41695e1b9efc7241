package main

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/agent"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/protocol"
)

func newAgentCmd(g *globals) *cobra.Command {
	var (
		root, name, listen, authKeys, hostKey string
		noMDNS                                bool
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Serve this host's messor directory to carriers (optional; stock sshd works too)",
		Long: `Run the optional messor host agent: an SSH server that offers nothing but SFTP,
confined to the outbox/ and inbox/ of the messor directory (--root, seen by
carriers as messor/; nothing else in it is served), and announces itself on
the LAN over mDNS so carriers find it without a hosts file.

Carriers log in with a public key listed in --authorized-keys. There is no
shell, no exec, no forwarding. Lines as 'messor key' prints them
(restrict,command="internal-sftp") are accepted, from= and expiry-time= are
honoured, and a line with an option the agent cannot honour is ignored and
logged. The host key is created on first start and kept
in --host-key; carriers pin its fingerprint (shown at start) with
'messor trust NAME'.

Files to send go in ROOT/outbox/<dest>/; delivered files appear in
ROOT/inbox/<source>/, with their sources' modes and mtimes, in directories
only you can enter (0700). A carrier's buffer is kept elsewhere
($XDG_DATA_HOME/messor/buffer or ~/.local/share/messor/buffer).

As a systemd user service (~/.config/systemd/user/messor-agent.service):

  [Unit]
  Description=messor agent
  After=network-online.target

  [Service]
  ExecStart=%h/go/bin/messor agent
  Restart=on-failure

  [Install]
  WantedBy=default.target

with messor installed by go install (into ~/go/bin; change the path if you
put it elsewhere), then: systemctl --user enable --now messor-agent, and
loginctl enable-linger $USER so that it runs while you are logged out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: g.level(slog.LevelInfo)}))
			cfg := agent.Config{Root: root, Name: name, AuthorizedKeysFile: authKeys, HostKeyFile: hostKey, Logger: log}
			if !noMDNS {
				cfg.Advertise = func(name string, port int, fp string) (func(), error) {
					return discovery.Advertise(discovery.Advert{Name: name, Port: port, Fingerprint: fp})
				}
			}
			a, err := agent.New(cfg)
			if err != nil {
				return usageErr("agent: %w", err)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return &exitError{exitFailed, fmt.Errorf("agent: listen on %s: %w (is another agent running? choose another with --listen)", listen, err)}
			}
			fmt.Fprintf(g.stdout, "messor agent %q serving %s on %s\nhost key %s\n", a.Name(), a.Root(), ln.Addr(), a.Fingerprint())
			if err := a.Serve(cmd.Context(), ln); err != nil {
				return &exitError{exitFailed, err}
			}
			fmt.Fprintln(g.stdout, "messor agent stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", envOr("MESSOR_AGENT_ROOT", filepath.Join(g.home, "messor")), "directory to serve, seen by carriers as messor/ (env $MESSOR_AGENT_ROOT)")
	f.StringVar(&name, "name", envOr("MESSOR_AGENT_NAME", ""), "name to advertise; carriers address files to it (env $MESSOR_AGENT_NAME; default: the short hostname)")
	f.StringVar(&listen, "listen", envOr("MESSOR_AGENT_LISTEN", net.JoinHostPort("", strconv.Itoa(protocol.DefaultAgentPort))), "address to listen on (env $MESSOR_AGENT_LISTEN)")
	f.StringVar(&authKeys, "authorized-keys", envOr("MESSOR_AGENT_AUTHORIZED_KEYS", filepath.Join(g.home, ".ssh", "authorized_keys")), "carriers' public keys, OpenSSH format, re-read at each login (env $MESSOR_AGENT_AUTHORIZED_KEYS)")
	f.StringVar(&hostKey, "host-key", envOr("MESSOR_AGENT_HOST_KEY", filepath.Join(g.home, ".config", "messor", "agent_host_ed25519_key")), "host key file, created on first start (env $MESSOR_AGENT_HOST_KEY)")
	f.BoolVar(&noMDNS, "no-mdns", false, "do not advertise over mDNS")
	return cmd
}
