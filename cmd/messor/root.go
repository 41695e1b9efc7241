package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
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
	allowRemote    bool
	allowMetered   bool
	verbose        bool
	quiet          bool
	dryRun         bool          // set by pickup, dropoff and sync's --dry-run
	lease          time.Duration // set by pickup and sync's --lease
	connectTimeout time.Duration
	idleTimeout    time.Duration
	settle         time.Duration
	noMDNS         bool
	mdnsTimeout    time.Duration
	stdout, stderr io.Writer
	log            *slog.Logger // made by logger, once
	logOnce        sync.Once
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	home, _ := os.UserHomeDir()
	g := &globals{home: home, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "messor",
		Short: "Sneakernet file sync: carry files between hosts over SSH",
		Long: `messor carries files between hosts that never see each other.

A host that wants to send files puts them in ~/messor/outbox/<dest>/ (a stock
sshd is all it needs). The carrier (this machine, a phone or laptop that
travels) picks them up into its buffer, and when it reaches <dest> delivers
them into <dest>'s ~/messor/inbox/<source>/, every byte verified.

Every delivery leaves a receipt that carriers bring home: the source's
~/messor/sent/<dest>.log lists what arrived (when, size, SHA-256, carrier,
path). A file leaves the outbox when a carrier takes it, unless the outbox
holds an empty .messor-keep file (in outbox/ or outbox/<dest>/): then it stays
there, leased to that carrier, until its receipt comes back.

Pickup hosts are listed one per line in ~/.messor_pickup_hosts; ports, users,
addresses and keys come from ~/.ssh/config, host keys from known_hosts.

Exit status: 0 when all that could be done was done (hosts out of range are
not failures), 1 when a transfer failed or a host was refused, 2 for bad
usage or configuration (a host name that resolves nowhere is one).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.Version = version()
	root.SetVersionTemplate("messor version {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.buffer, "buffer", os.Getenv("MESSOR_BUFFER"), "carrier buffer directory (env $MESSOR_BUFFER; default $XDG_DATA_HOME/messor/buffer, else ~/.local/share/messor/buffer)")
	pf.StringVar(&g.limit, "limit", envOr("MESSOR_LIMIT", "500MiB"), "most bytes the buffer may hold, e.g. 500MiB, 2GiB, 1.5GB (env $MESSOR_LIMIT)")
	pf.StringVar(&g.hosts, "hosts", envOr("MESSOR_HOSTS", filepath.Join(home, ".messor_pickup_hosts")), "pickup hosts file, one name a line (env $MESSOR_HOSTS)")
	pf.BoolVar(&g.allowRemote, "allow-remote", false, "visit hosts at addresses not on a local network (not RFC 1918, IPv6 ULA, link-local or loopback), as the hosts file allows per host with \"NAME remote\"")
	pf.BoolVar(&g.allowMetered, "allow-metered", false, "run on a connection NetworkManager says is metered")
	pf.BoolVar(&g.acceptNew, "accept-new", false, "trust and pin unknown host keys of configured hosts on first contact (like ssh's StrictHostKeyChecking=accept-new); never an agent heard over mDNS (use messor trust), and changed keys are always refused")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log every file and detail, in slog's key=value format")
	pf.BoolVarP(&g.quiet, "quiet", "q", false, "print only failures and errors (no summaries, no progress bar)")
	pf.DurationVar(&g.connectTimeout, "connect-timeout", carrier.DefaultConnectTimeout, "give up on a host that does not answer and log in within this time (ssh_config ConnectTimeout wins); a host that did gets 30s to start SFTP")
	pf.DurationVar(&g.idleTimeout, "idle-timeout", carrier.DefaultIdleTimeout, "give up on a host that sends nothing, or answers none of the SFTP requests waiting, for this long (a stalled link, a hung mount); 0 waits for ever")
	pf.DurationVar(&g.settle, "settle", 5*time.Second, "leave files modified more recently than this for the next visit (still being written)")
	pf.BoolVar(&g.noMDNS, "no-mdns", os.Getenv("MESSOR_NO_MDNS") != "", "do not look for agents on the LAN over mDNS (or set $MESSOR_NO_MDNS)")
	pf.DurationVar(&g.mdnsTimeout, "mdns-timeout", 2*time.Second, "how long to listen for agents on the LAN")
	root.PersistentPreRun = func(*cobra.Command, []string) { g.defaultBuffer() }
	root.AddCommand(newPickupCmd(g), newDropoffCmd(g), newSyncCmd(g), newStatusCmd(g), newAgentCmd(g), newTrustCmd(g), newDemoCmd(g), newWatchCmd(g), newRecoverCmd(g), newKeyCmd(g), newDropCmd(g), newReaddressCmd(g))
	return root
}

// defaultBuffer fills in the buffer directory when neither --buffer nor
// $MESSOR_BUFFER names one, moving a buffer from where messor kept it
// before (inside ~/messor, which the agent serves).
func (g *globals) defaultBuffer() {
	if g.buffer != "" {
		return
	}
	dir, err := carrier.MoveLegacyBuffer(carrier.LegacyBufferDir(g.home), carrier.DefaultBufferDir(g.home, os.Getenv("XDG_DATA_HOME")))
	if err != nil {
		fmt.Fprintln(g.stderr, "messor:", err)
	}
	g.buffer = dir
}

func (g *globals) level(def slog.Level) slog.Level {
	if g.verbose {
		return slog.LevelDebug
	}
	return def
}

// logger is the run's logger: with -v, every detail in slog's text
// format; else warnings and errors, each once, in plain words (humanLog).
func (g *globals) logger() *slog.Logger {
	g.logOnce.Do(func() {
		if g.verbose {
			g.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			g.log = slog.New(newHumanLog(g.stderr))
		}
	})
	return g.log
}

// openCarrier opens the buffer (taking the run lock), answers `messor
// status` for it meanwhile, and makes a carrier; closeBuf ends both.
func (g *globals) openCarrier() (c *carrier.Carrier, closeBuf func(), err error) {
	limit, err := carrier.ParseSize(g.limit)
	if err != nil {
		return nil, nil, usageErr("--limit: %w", err)
	}
	if g.idleTimeout < 0 {
		return nil, nil, usageErr("--idle-timeout %v: negative (0 waits for ever)", g.idleTimeout)
	}
	buf, err := carrier.OpenBuffer(g.buffer, limit)
	if err != nil {
		return nil, nil, &exitError{exitFailed, err}
	}
	stopStatus, err := carrier.ServeStatus(buf)
	if err != nil {
		g.logger().Debug("status will not answer during this run", "err", err)
	}
	closeBuf = func() { stopStatus(); buf.Close() }
	settle, idle := g.settle, g.idleTimeout
	if settle == 0 {
		settle = -1
	}
	if idle == 0 {
		idle = -1
	}
	opts := carrier.Options{
		AcceptNew:      g.acceptNew,
		AllowRemote:    g.allowRemote,
		AllowMetered:   g.allowMetered,
		Metered:        meteredProbe,
		IsLocal:        localAddr,
		ConnectTimeout: g.connectTimeout,
		IdleTimeout:    idle,
		Settle:         settle,
		Logger:         g.logger(),
		VerifySource:   true,
		DryRun:         g.dryRun,
		Lease:          g.lease,
		OnPin: func(p carrier.PinNote) {
			if !g.quiet {
				fmt.Fprintf(g.stderr, "messor: permanently added %s's host key (%s) to %s\n", p.Host, p.Fingerprint, p.File)
			}
		},
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		opts.Passphrase = g.askPassphrase
	}
	if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !g.verbose && !g.quiet {
		opts.Progress = &barProgress{w: g.stderr}
	}
	return carrier.New(buf, opts), closeBuf, nil
}

// localAddr says whether an address is on a local network (tests replace
// it, to make a loopback address remote without leaving loopback).
var localAddr = discovery.LocalAddr

// meteredProbe says whether the connection is metered (tests replace it).
var meteredProbe = discovery.Metered

// askPassphrase asks for file's passphrase on the terminal, as ssh does;
// an empty one passes the key over.
func (g *globals) askPassphrase(file string) ([]byte, error) {
	fmt.Fprintf(g.stderr, "Enter passphrase for key '%s': ", file)
	pass, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(g.stderr)
	if err == nil && len(pass) == 0 {
		err = errors.New("no passphrase given")
	}
	return pass, err
}

// report prints one line per host (with -q, only the hosts that failed
// or are misconfigured) and returns the exit error, if any.
// A host out of reach in both halves of a sync is said to be so once.
func (g *globals) report(reports []*carrier.HostReport, badConfig bool) error {
	away := map[string]bool{}
	for _, r := range reports {
		if r.Unreachable() {
			if away[r.Host] {
				continue
			}
			away[r.Host] = true
		}
		g.printReport(r, "")
	}
	return g.exitFor(reports, badConfig)
}

// printReport prints r's summary, after prefix, and its failed files
// (with -v, its skipped and waiting ones too).
func (g *globals) printReport(r *carrier.HostReport, prefix string) {
	if r.Misconfigured() { // a configuration error, said as one
		fmt.Fprintln(g.stderr, "messor:", r.Err)
		return
	}
	if g.quiet && !r.Failure() && !r.NoSuchHost() {
		return
	}
	fmt.Fprintln(g.stdout, prefix+r.Summary())
	for _, f := range r.Failed {
		fmt.Fprintf(g.stderr, "  failed: %s: %s\n", f.Path, f.Reason)
	}
	for _, f := range r.Waiting {
		if f.NeverFits() && !g.verbose {
			fmt.Fprintf(g.stderr, "  never fits: %s: %s; raise --limit to carry it\n", f.Path, f.Reason)
		}
	}
	if g.verbose {
		for _, f := range r.Skipped {
			fmt.Fprintf(g.stderr, "  skipped: %s: %s\n", f.Path, f.Reason)
		}
		for _, f := range r.Waiting {
			fmt.Fprintf(g.stderr, "  waiting: %s: %s\n", f.Path, f.Reason)
		}
	}
}

// exitFor is the exit error for a run that made reports: 1 if a host
// failed, else 2 if the configuration is bad (bad lines, a name that
// resolves nowhere), else none.
func (g *globals) exitFor(reports []*carrier.HostReport, badConfig bool) error {
	failed := false
	for _, r := range reports {
		failed = failed || r.Failure()
		badConfig = badConfig || r.NoSuchHost() || r.Misconfigured()
	}
	switch {
	case failed:
		return &exitError{code: exitFailed}
	case badConfig:
		return &exitError{code: exitUsage}
	}
	return nil
}

// version is the module version messor was built from, with its commit
// when built from a checkout.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 && (v == "" || v == "(devel)") {
			v = "(devel) " + s.Value[:12]
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
}
