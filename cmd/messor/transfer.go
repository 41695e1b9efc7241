package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/carrier"
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
			c, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer c.Buffer().Close()
			hs, err := g.findHosts(cmd.Context())
			if err != nil {
				return err
			}
			return pickup(cmd, g, c, hs)
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
			c, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer c.Buffer().Close()
			hs, err := g.findHosts(cmd.Context())
			if err != nil {
				return err
			}
			return dropoff(cmd, g, c, hs)
		},
	}
}

func pickup(cmd *cobra.Command, g *globals, c *carrier.Carrier, hs *hostSet) error {
	hosts := hs.pickup()
	if len(hosts) == 0 {
		fmt.Fprintf(g.stderr, "messor: no pickup hosts: list host names, one a line, in %s, or run agents on the LAN\n", g.hosts)
	}
	return g.report(c.Pickup(cmd.Context(), hosts), sources(hosts), hs.bad)
}

func dropoff(cmd *cobra.Command, g *globals, c *carrier.Carrier, hs *hostSet) error {
	dests, err := c.Destinations()
	if err != nil {
		return &exitError{exitFailed, err}
	}
	hosts := hs.forDests(g, dests)
	reports, err := c.Dropoff(cmd.Context(), hosts)
	if err != nil {
		return &exitError{exitFailed, err}
	}
	return g.report(reports, sources(hosts), false)
}

func newSyncCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "sync",
		Short: "Dropoff, then pickup",
		Long:  "Deliver what the buffer holds to reachable destinations, then pick up from reachable pickup hosts.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer c.Buffer().Close()
			hs, err := g.findHosts(cmd.Context())
			if err != nil {
				return err
			}
			derr := dropoff(cmd, g, c, hs)
			if cmd.Context().Err() != nil {
				return derr
			}
			perr := pickup(cmd, g, c, hs)
			if derr != nil {
				return derr
			}
			return perr
		},
	}
}
