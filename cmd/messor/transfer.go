package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

func newPickupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pickup",
		Short: "Carry what waits in each reachable pickup host's outbox into the buffer",
		Long: `Visit every host in the pickup hosts file that answers, and carry the files
waiting in its ~/messor/outbox/<dest>/ into the buffer, oldest first, as far as
the limit allows. A file leaves the outbox only once its copy is committed in
the buffer. Interrupted transfers resume on the next run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withCarrier(cmd, pickup)
		},
	}
}

func newDropoffCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dropoff",
		Short: "Deliver carried files to every reachable destination",
		Long: `For every destination the buffer holds files for, connect (names resolve
through ~/.ssh/config) and deliver into its ~/messor/inbox/<source>/. Each
file is uploaded to a hidden partial, synced, verified and only then renamed
into place; a different file already under that name is kept, and the new one
gets a name like "photo (2).jpg".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withCarrier(cmd, dropoff)
		},
	}
}

// pickup serves the hosts-file hosts at once, then the agents heard over
// mDNS meanwhile.
func pickup(cmd *cobra.Command, g *globals, c *carrier.Carrier, hs *hostSet) error {
	reports := c.Pickup(cmd.Context(), hs.file)
	var agents []discovery.Host
	for _, h := range hs.pickup() {
		if !hs.inFile(h.Name) {
			agents = append(agents, h)
		}
	}
	reports = append(reports, c.Pickup(cmd.Context(), agents)...)
	if len(hs.file)+len(agents) == 0 {
		fmt.Fprintf(g.stderr, "messor: no pickup hosts: list host names, one a line, in %s, or run agents on the LAN\n", g.hosts)
	}
	return g.report(reports, sources(append(hs.file, agents...)), hs.isBad())
}

// dropoff delivers to hosts-file destinations at once, then to the others
// (agents heard over mDNS, or names in ~/.ssh/config).
func dropoff(cmd *cobra.Command, g *globals, c *carrier.Carrier, hs *hostSet) error {
	dests, err := c.Destinations()
	if err != nil {
		return &exitError{exitFailed, err}
	}
	var now, later []string
	for _, d := range dests {
		if hs.inFile(d) {
			now = append(now, d)
		} else {
			later = append(later, d)
		}
	}
	var reports []*carrier.HostReport
	var hosts []discovery.Host
	for _, names := range [][]string{now, later} {
		if len(names) == 0 || cmd.Context().Err() != nil {
			continue
		}
		hh := hs.forDests(g, names)
		hosts = append(hosts, hh...)
		rs, err := c.Dropoff(cmd.Context(), hh)
		if err != nil {
			return &exitError{exitFailed, err}
		}
		reports = append(reports, rs...)
	}
	return g.report(reports, sources(hosts), hs.bad)
}

func newSyncCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "sync",
		Short: "Dropoff, then pickup",
		Long:  "Deliver what the buffer holds to reachable destinations, then pick up from reachable pickup hosts.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withCarrier(cmd, func(cmd *cobra.Command, g *globals, c *carrier.Carrier, hs *hostSet) error {
				derr := dropoff(cmd, g, c, hs)
				if cmd.Context().Err() != nil {
					return derr
				}
				perr := pickup(cmd, g, c, hs)
				if derr != nil {
					return derr
				}
				return perr
			})
		},
	}
}

// withCarrier opens the buffer (the run lock), finds the hosts, and runs fn.
func (g *globals) withCarrier(cmd *cobra.Command, fn func(*cobra.Command, *globals, *carrier.Carrier, *hostSet) error) error {
	c, err := g.openCarrier()
	if err != nil {
		return err
	}
	defer c.Buffer().Close()
	hs, err := g.findHosts(cmd.Context())
	if err != nil {
		return err
	}
	return fn(cmd, g, c, hs)
}
