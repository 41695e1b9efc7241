package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

func newWatchCmd(g *globals) *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Stay running and sync with hosts as they come into reach",
		Long: `Stay running: every --interval, and at once (at most once an --interval) when a pinned agent announces
itself on the LAN, look for pickup hosts and destinations in reach (a cheap TCP probe),
deliver what the buffer holds for them, and pick up what waits. Hosts that fail
are retried less and less often. Quiet when there is nothing to do; stops
cleanly on Ctrl-C or SIGTERM, and anything cut short resumes next time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, closeBuf, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer closeBuf()
			wake := make(chan struct{}, 1)
			if !g.noMDNS {
				// Only a pinned agent wakes a round: adverts under other
				// names, however many, cost the LAN's flooder nothing here.
				go discovery.Watch(ctx, g.logger(), func(h discovery.Host) {
					if pins, err := carrier.AgentPins(g.agentsFile()); err != nil || !pins.Pinned(h.Name) {
						return
					}
					select {
					case wake <- struct{}{}:
					default:
					}
				})
			}
			if !g.quiet {
				fmt.Fprintf(g.stdout, "messor watch: checking for hosts every %s (Ctrl-C to stop)\n", interval)
			}
			err = c.Watch(ctx, carrier.WatchConfig{
				Interval: interval,
				Wake:     wake,
				Find: func(ctx context.Context) (carrier.Finder, error) {
					f, _, err := g.find(ctx)
					return f, err
				},
				Report: func(r *carrier.HostReport) {
					if ctx.Err() == nil {
						g.printReport(r, time.Now().Format("15:04:05 "))
					}
				},
			})
			if ctx.Err() != nil {
				if !g.quiet {
					fmt.Fprintln(g.stdout, "messor watch: stopped")
				}
				return nil
			}
			return &exitError{exitFailed, err}
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 30*time.Second, "how often to look for hosts in reach")
	return cmd
}
