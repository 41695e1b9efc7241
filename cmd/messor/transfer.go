package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/protocol"
)

// runFlags are the flags of pickup, dropoff and sync.
type runFlags struct {
	dryRun, asJSON bool
	lease          time.Duration
}

// addLease adds --lease (pickup and sync).
func (rf *runFlags) addLease(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().DurationVar(&rf.lease, "lease", carrier.DefaultLease, "in an outbox in keep mode (a .messor-keep file), how long other carriers leave a file this run carried")
	return cmd
}

func (rf *runFlags) add(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().BoolVarP(&rf.dryRun, "dry-run", "n", false, "connect and say what would move and what would wait (and why); move nothing")
	cmd.Flags().BoolVar(&rf.asJSON, "json", false, "print one JSON object with a result per host (schema 1, see docs/json.md)")
	return cmd
}

func newPickupCmd(g *globals) *cobra.Command {
	rf := &runFlags{}
	return rf.addLease(rf.add(&cobra.Command{
		Use:   "pickup [HOST...]",
		Short: "Carry what waits in each reachable pickup host's outbox into the buffer",
		Long: `Visit every host in the pickup hosts file that answers (or only the HOSTs
named, listed or not), and carry the files waiting in its
~/messor/outbox/<dest>/ into the buffer, oldest first, as far as the limit
allows. A file leaves the outbox only once its copy is committed in the
buffer. Interrupted transfers resume on the next run.`,
		RunE: func(cmd *cobra.Command, names []string) error {
			return g.withCarrier(cmd, rf, func(c *carrier.Carrier, f *discovery.Finder) ([]*carrier.HostReport, error) {
				return g.pickup(cmd, c, f, names), nil
			})
		},
	}))
}

func newDropoffCmd(g *globals) *cobra.Command {
	rf := &runFlags{}
	return rf.add(&cobra.Command{
		Use:   "dropoff [HOST...]",
		Short: "Deliver carried files to every reachable destination",
		Long: `For every destination the buffer holds files for (or only the HOSTs named),
connect (names resolve through ~/.ssh/config) and deliver into its
~/messor/inbox/<source>/. Each file is uploaded to a hidden partial, synced,
verified and only then renamed into place; a different file already under
that name is kept, and the new one gets a name like "photo (2).jpg".`,
		RunE: func(cmd *cobra.Command, names []string) error {
			return g.withCarrier(cmd, rf, func(c *carrier.Carrier, f *discovery.Finder) ([]*carrier.HostReport, error) {
				return c.DropoffTo(cmd.Context(), f, names)
			})
		},
	})
}

func newSyncCmd(g *globals) *cobra.Command {
	rf := &runFlags{}
	return rf.addLease(rf.add(&cobra.Command{
		Use:   "sync [HOST...]",
		Short: "Dropoff, pickup, then deliver what was just picked up",
		Long: `Deliver what the buffer holds to reachable destinations, pick up from
reachable pickup hosts, then deliver what was just picked up to its
destinations in the same run (or, with HOSTs, deliver to and pick up from
those only). A destination found out of range or refused in this run is
not dialed again; each host has one line per verb. With --dry-run nothing
is picked up, so only the first delivery and the pickup are shown.`,
		RunE: func(cmd *cobra.Command, names []string) error {
			return g.withCarrier(cmd, rf, func(c *carrier.Carrier, f *discovery.Finder) ([]*carrier.HostReport, error) {
				return c.Sync(cmd.Context(), f, names, func() []*carrier.HostReport { return g.pickup(cmd, c, f, names) })
			})
		},
	}))
}

// pickup serves the hosts named, or the hosts-file hosts at once and then
// the pinned agents heard over mDNS meanwhile.
func (g *globals) pickup(cmd *cobra.Command, c *carrier.Carrier, f *discovery.Finder, names []string) []*carrier.HostReport {
	if len(names) > 0 {
		return c.PickupFrom(cmd.Context(), f, names)
	}
	reports := c.PickupFound(cmd.Context(), f)
	if len(reports) == 0 {
		fmt.Fprintf(g.stderr, "messor: no pickup hosts: list host names, one a line, in %s, or pin agents on the LAN with `messor trust NAME`\n", g.hosts)
	}
	return reports
}

// withCarrier opens the buffer (the run lock), finds the hosts, runs fn
// and reports what it did, as text or JSON.
func (g *globals) withCarrier(cmd *cobra.Command, rf *runFlags, fn func(*carrier.Carrier, *discovery.Finder) ([]*carrier.HostReport, error)) (err error) {
	for _, n := range cmd.Flags().Args() {
		if err := protocol.CheckHostName(n); err != nil {
			return usageErr("host %q: %w", n, err)
		}
	}
	g.dryRun = rf.dryRun
	g.lease = rf.lease
	c, closeBuf, err := g.openCarrier()
	if err != nil {
		return err
	}
	defer closeBuf()
	f, bad, err := g.find(cmd.Context())
	if err != nil {
		return err
	}
	defer f.Close()
	reports, err := fn(c, f)
	if err != nil && cmd.Context().Err() == nil {
		return &exitError{exitFailed, err}
	}
	// An interrupted run still reports what it did; run then says it was
	// interrupted and exits with the signal's status.
	defer func() {
		if cmd.Context().Err() != nil {
			err = cmd.Context().Err()
		}
	}()
	if rf.asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(carrier.NewRunReport(cmd.Name(), rf.dryRun, reports)); err != nil {
			return &exitError{exitFailed, err}
		}
		return g.exitFor(reports, bad)
	}
	return g.report(reports, bad)
}
