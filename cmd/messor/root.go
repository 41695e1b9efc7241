package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

// globals are the flags every subcommand shares.
type globals struct {
	home           string
	buffer         string
	limit          string
	hosts          string
	acceptNew      bool
	verbose        bool
	connectTimeout time.Duration
	settle         time.Duration
	stdout, stderr io.Writer
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newRootCmd() *cobra.Command {
	home, _ := os.UserHomeDir()
	g := &globals{home: home, stdout: os.Stdout, stderr: os.Stderr}
	root := &cobra.Command{
		Use:   "messor",
		Short: "Sneakernet file sync: carry files between hosts over SSH",
		Long: `messor carries files between hosts that never see each other.

A host that wants to send files puts them in ~/messor/outbox/<dest>/ (a stock
sshd is all it needs). The carrier (this machine, a phone or laptop that
travels) picks them up into its buffer, and when it reaches <dest> delivers
them into <dest>'s ~/messor/inbox/<source>/, every byte verified.

Pickup hosts are listed one per line in ~/.messor_pickup_hosts; ports, users,
addresses and keys come from ~/.ssh/config, host keys from known_hosts.

Exit status: 0 when all that could be done was done (hosts out of range are
not failures), 1 when a transfer failed or a host was refused, 2 for bad
usage or configuration.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.buffer, "buffer", envOr("MESSOR_BUFFER", filepath.Join(home, "messor", "buffer")), "carrier buffer directory (default: $MESSOR_BUFFER, else ~/messor/buffer)")
	pf.StringVar(&g.limit, "limit", envOr("MESSOR_LIMIT", "500MiB"), "most bytes the buffer may hold, e.g. 500MiB, 2GiB, 1.5GB (default: $MESSOR_LIMIT, else 500MiB)")
	pf.StringVar(&g.hosts, "hosts", envOr("MESSOR_HOSTS", filepath.Join(home, ".messor_pickup_hosts")), "pickup hosts file, one name a line (default: $MESSOR_HOSTS, else ~/.messor_pickup_hosts)")
	pf.BoolVar(&g.acceptNew, "accept-new", false, "trust and pin unknown host keys on first contact (like ssh's StrictHostKeyChecking=accept-new); changed keys are always refused")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log every file")
	pf.DurationVar(&g.connectTimeout, "connect-timeout", carrier.DefaultConnectTimeout, "give up on a host that does not answer within this time (ssh_config ConnectTimeout wins)")
	pf.DurationVar(&g.settle, "settle", 5*time.Second, "leave files modified more recently than this for the next visit (still being written)")
	root.AddCommand(newPickupCmd(g), newDropoffCmd(g), newSyncCmd(g), newStatusCmd(g))
	return root
}

func (g *globals) logger() *slog.Logger {
	level := slog.LevelWarn
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

// openCarrier opens the buffer (taking the run lock) and makes a carrier.
func (g *globals) openCarrier() (*carrier.Carrier, error) {
	limit, err := carrier.ParseSize(g.limit)
	if err != nil {
		return nil, usageErr("--limit: %w", err)
	}
	buf, err := carrier.OpenBuffer(g.buffer, limit)
	if err != nil {
		return nil, &exitError{exitFailed, err}
	}
	settle := g.settle
	if settle == 0 {
		settle = -1
	}
	opts := carrier.Options{
		AcceptNew:      g.acceptNew,
		ConnectTimeout: g.connectTimeout,
		Settle:         settle,
		Logger:         g.logger(),
		VerifySource:   true,
	}
	if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !g.verbose {
		opts.Progress = &barProgress{w: g.stderr}
	}
	return carrier.New(buf, opts), nil
}

// pickupHosts reads the hosts file and resolves each name through
// ~/.ssh/config. Bad lines are reported and the good ones still served;
// badConfig says whether there were any.
func (g *globals) pickupHosts() (hosts []discovery.Host, badConfig bool, err error) {
	names, errs, err := discovery.ReadHostsFile(g.hosts)
	if err != nil {
		return nil, false, usageErr("%w", err)
	}
	for _, e := range errs {
		fmt.Fprintln(g.stderr, "messor:", e)
	}
	cfg, err := discovery.LoadSSHConfig(g.home)
	if err != nil {
		return nil, false, usageErr("%w", err)
	}
	for _, n := range names {
		h, err := cfg.Resolve(n)
		if err != nil {
			fmt.Fprintln(g.stderr, "messor:", err)
			badConfig = true
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts, badConfig || len(errs) > 0, nil
}

// resolve resolves names through ~/.ssh/config.
func (g *globals) resolve(names []string) ([]discovery.Host, error) {
	cfg, err := discovery.LoadSSHConfig(g.home)
	if err != nil {
		return nil, usageErr("%w", err)
	}
	var out []discovery.Host
	for _, n := range names {
		h, err := cfg.Resolve(n)
		if err != nil {
			fmt.Fprintln(g.stderr, "messor:", err)
			continue
		}
		out = append(out, h)
	}
	return out, nil
}

// report prints one line per host and returns the exit error, if any.
func (g *globals) report(reports []*carrier.HostReport, badConfig bool) error {
	failed := false
	for _, r := range reports {
		fmt.Fprintln(g.stdout, r.Summary())
		for _, f := range r.Failed {
			fmt.Fprintf(g.stderr, "  failed: %s: %s\n", f.Path, f.Reason)
		}
		if g.verbose {
			for _, f := range r.Skipped {
				fmt.Fprintf(g.stderr, "  skipped: %s: %s\n", f.Path, f.Reason)
			}
			for _, f := range r.Waiting {
				fmt.Fprintf(g.stderr, "  waiting: %s: %s\n", f.Path, f.Reason)
			}
		}
		if r.Failure() {
			failed = true
		}
	}
	switch {
	case failed:
		return &exitError{code: exitFailed}
	case badConfig:
		return &exitError{code: exitUsage}
	}
	return nil
}
