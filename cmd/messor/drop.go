package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

func newDropCmd(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "drop DEST [PATH]",
		Short: "Remove from the buffer what is carried for DEST (a typo), or only DEST's PATH",
		Long: `Remove from the buffer the files carried for DEST, or with PATH only the
file at PATH and those under it (as status -v lists them). They are lost:
they left their outbox when they were picked up. On a terminal drop asks
first; elsewhere it needs --yes. Each file is removed as a delivery removes
it: a kill leaves each one either carried or dropped, never half; drop
again to finish. ` + "`messor status`" + ` flags destinations never seen.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest, path := args[0], ""
			if len(args) == 2 {
				path = args[1]
			}
			if err := protocol.CheckHostName(dest); err != nil {
				return usageErr("destination %q: %w", dest, err)
			}
			c, closeBuf, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer closeBuf()
			ents, err := c.Buffer().CarriedFor(dest, path)
			if err != nil {
				return &exitError{exitFailed, err}
			}
			what := dest
			if path != "" {
				what = dest + "/" + strings.Trim(path, "/")
			}
			if len(ents) == 0 {
				return usageErr("nothing carried for %s", what)
			}
			var size int64
			for _, e := range ents {
				size += e.Size
			}
			question := fmt.Sprintf("drop %d file(s), %s, carried for %s? They are lost. [y/N] ", len(ents), carrier.FormatSize(size), what)
			if !yes {
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return usageErr("%snot on a terminal: pass --yes to drop", strings.TrimSuffix(question, "[y/N] "))
				}
				fmt.Fprint(g.stderr, question)
				answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return &exitError{exitFailed, errors.New("nothing dropped")}
				}
			}
			if err := c.Buffer().Drop(ents); err != nil {
				return &exitError{exitFailed, err}
			}
			fmt.Fprintf(g.stdout, "dropped %d file(s) carried for %s, %s\n", len(ents), what, carrier.FormatSize(size))
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "drop without asking")
	return cmd
}

func newReaddressCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "readdress OLD NEW",
		Short: "Carry the files carried for OLD (a typo) for NEW instead",
		Long: `Give the files the buffer carries for OLD the destination NEW: they are
delivered to NEW's ~/messor/inbox/<source>/, once. Each file's new record
is committed with the removal of the old one: a kill leaves it carried for
OLD or for NEW, never both; readdress again to finish.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			from, to := args[0], args[1]
			for _, n := range args {
				if err := protocol.CheckHostName(n); err != nil {
					return usageErr("destination %q: %w", n, err)
				}
			}
			if from == to {
				return usageErr("readdress %s %s: the same name", from, to)
			}
			c, closeBuf, err := g.openCarrier()
			if err != nil {
				return err
			}
			defer closeBuf()
			ents, err := c.Buffer().CarriedFor(from, "")
			if err != nil {
				return &exitError{exitFailed, err}
			}
			if len(ents) == 0 {
				return usageErr("nothing carried for %s", from)
			}
			if err := c.Buffer().Readdress(ents, to); err != nil {
				return &exitError{exitFailed, err}
			}
			fmt.Fprintf(g.stdout, "readdressed %d file(s) from %s to %s\n", len(ents), from, to)
			return nil
		},
	}
}
