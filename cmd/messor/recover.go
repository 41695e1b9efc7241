package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/carrier"
)

func newRecoverCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Rebuild a damaged buffer index from the buffer's own records",
		Long: `When a run reports that the buffer index is corrupt, rebuild it: the damaged
index is kept beside the new one (not deleted), every carried file whose record
and content still verify (SHA-256) is restored, and content no record names is
moved to quarantine/ in the buffer rather than deleted. The new index is built
beside the old one and put in its place at the end: an interrupted recover
leaves the old index, and running it again is safe. A healthy index is left as it is
(--force rebuilds it anyway).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				healthy, files, err := carrier.IndexHealthy(g.buffer)
				if err != nil {
					return &exitError{exitFailed, err}
				}
				if healthy {
					fmt.Fprintf(g.stdout, "buffer index is healthy (%d carried file(s)); nothing to recover\n", files)
					return nil
				}
			}
			rep, err := carrier.RecoverBuffer(g.buffer)
			if err != nil {
				return &exitError{exitFailed, err}
			}
			if rep.MovedAside != "" {
				fmt.Fprintf(g.stdout, "damaged index kept as %s\n", rep.MovedAside)
			}
			fmt.Fprintf(g.stdout, "restored %d carried file(s)\n", rep.Restored)
			for _, l := range rep.Lost {
				fmt.Fprintf(g.stdout, "lost: %s\n", l)
			}
			for _, o := range rep.Orphans {
				fmt.Fprintf(g.stdout, "kept unnamed content in quarantine/: %s\n", o)
			}
			if len(rep.Lost) > 0 {
				return &exitError{code: exitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "rebuild the index even when it is healthy")
	return cmd
}
