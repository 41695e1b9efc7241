package main

import (
	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/internal/demo"
)

func newDemoCmd(g *globals) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch messor move files between two hosts on this machine (no setup)",
		Long: `Start two messor agents on loopback in a temporary directory, put example files
in their outboxes, carry them from each to the other with pickup and dropoff,
and print what moved, from where to where, how much, how long, and that every
file was verified. Needs no setup, no root and no network beyond loopback.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := demo.Run(cmd.Context(), demo.Options{Keep: keep, Out: g.stdout}); err != nil {
				return &exitError{exitFailed, err}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the demo directory to look around")
	return cmd
}
