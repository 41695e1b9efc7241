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
			hosts, bad, err := g.pickupHosts()
			if err != nil {
				return err
			}
			c, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer c.Buffer().Close()
			if len(hosts) == 0 {
				fmt.Fprintf(g.stderr, "messor: no pickup hosts: list host names, one a line, in %s\n", g.hosts)
			}
			return g.report(c.Pickup(cmd.Context(), hosts), bad)
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
			return dropoff(cmd, g, c)
		},
	}
}

func dropoff(cmd *cobra.Command, g *globals, c *carrier.Carrier) error {
	dests, err := c.Destinations()
	if err != nil {
		return &exitError{exitFailed, err}
	}
	hosts, err := g.resolve(dests)
	if err != nil {
		return err
	}
	reports, err := c.Dropoff(cmd.Context(), hosts)
	if err != nil {
		return &exitError{exitFailed, err}
	}
	return g.report(reports, false)
}

func newSyncCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "sync",
		Short: "Dropoff, then pickup",
		Long:  "Deliver what the buffer holds to reachable destinations, then pick up from reachable pickup hosts.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hosts, bad, err := g.pickupHosts()
			if err != nil {
				return err
			}
			c, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer c.Buffer().Close()
			derr := dropoff(cmd, g, c)
			if cmd.Context().Err() != nil {
				return derr
			}
			perr := g.report(c.Pickup(cmd.Context(), hosts), bad)
			if derr != nil {
				return derr
			}
			return perr
		},
	}
}
