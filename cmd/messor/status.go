package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/messor-sync/messor/carrier"
)

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the buffer carries, for whom and from where",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			limit, err := carrier.ParseSize(g.limit)
			if err != nil {
				return usageErr("--limit: %w", err)
			}
			st, err := carrier.ReadStatusAnyway(cmd.Context(), g.buffer, limit)
			if err != nil {
				return &exitError{exitFailed, err}
			}
			if f, _, err := g.findBrowsing(cmd.Context(), false); err == nil {
				st.FlagNeverSeen(f)
				f.Close()
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(g.stdout, "buffer %s: %d file(s), %s stored of %s limit (%.0f%%)\n",
				st.Buffer, st.Files, carrier.FormatSize(st.Stored), carrier.FormatSize(st.Limit),
				100*float64(st.Stored)/float64(max(st.Limit, 1)))
			if q := st.Quarantine; q.Files > 0 {
				fmt.Fprintf(g.stdout, "quarantine: %d file(s), %s in %s, found in the buffer and kept (never deleted by messor)\n",
					q.Files, carrier.FormatSize(q.Bytes), q.Dir)
			}
			for _, h := range st.Hosts {
				fmt.Fprintf(g.stdout, "%s: %d receipt(s) waiting to go home, %d lease(s) held\n", h.Host, h.Receipts, h.Leases)
			}
			if len(st.Routes) == 0 {
				fmt.Fprintln(g.stdout, "nothing carried")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FOR\tFROM\tFILES\tSIZE")
			for _, r := range st.Routes {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Dest, r.Source, r.Files, carrier.FormatSize(r.Bytes))
			}
			tw.Flush()
			for _, d := range st.NeverSeen {
				fmt.Fprintf(g.stdout, "%s: never seen: not in %s, ~/.ssh/config or the pinned agents, and no host key for it is known; a typo? `messor readdress %s NAME` or `messor drop %s`\n", d, g.hosts, d, d)
			}
			if g.verbose {
				for _, e := range st.Items {
					fmt.Fprintf(g.stdout, "  %s -> %s  %s  %s  sha256:%s\n", e.Source, e.Dest, e.Path, carrier.FormatSize(e.Size), e.Hash[:16])
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print machine-readable JSON")
	return cmd
}
