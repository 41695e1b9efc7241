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

// pickup serves the hosts-file hosts at once, then the pinned agents heard
// over mDNS meanwhile.
func pickup(cmd *cobra.Command, g *globals, c *carrier.Carrier, f *discovery.Finder, bad bool) error {
	reports := c.PickupFound(cmd.Context(), f)
	if len(reports) == 0 {
		fmt.Fprintf(g.stderr, "messor: no pickup hosts: list host names, one a line, in %s, or pin agents on the LAN with `messor trust NAME`\n", g.hosts)
	}
	return g.report(reports, bad)
}

// dropoff delivers to every destination the buffer holds files for.
func dropoff(cmd *cobra.Command, g *globals, c *carrier.Carrier, f *discovery.Finder, bad bool) error {
	reports, err := c.DropoffFound(cmd.Context(), f)
	if err != nil {
		return &exitError{exitFailed, err}
	}
	return g.report(reports, bad)
}

func newSyncCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "sync",
		Short: "Dropoff, then pickup",
		Long:  "Deliver what the buffer holds to reachable destinations, then pick up from reachable pickup hosts.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withCarrier(cmd, func(cmd *cobra.Command, g *globals, c *carrier.Carrier, f *discovery.Finder, bad bool) error {
				derr := dropoff(cmd, g, c, f, bad)
				if cmd.Context().Err() != nil {
					return derr
				}
				perr := pickup(cmd, g, c, f, bad)
				if derr != nil {
					return derr
				}
				return perr
			})
		},
	}
}

// withCarrier opens the buffer (the run lock), finds the hosts, and runs fn.
func (g *globals) withCarrier(cmd *cobra.Command, fn func(*cobra.Command, *globals, *carrier.Carrier, *discovery.Finder, bool) error) error {
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
	return fn(cmd, g, c, f, bad)
}
