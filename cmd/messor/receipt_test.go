package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/protocol"
)

// Keep mode and receipts from the command line: the file stays under a
// lease (--lease), status shows the lease and then the receipt waiting to
// go home, and the next pickup writes the ledger and empties the outbox.
func TestKeepModeCommandLine(t *testing.T) {
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", map[string][]byte{"report.pdf": []byte("pdf")})
	marker := filepath.Join(w.dirs["alpha"], filepath.FromSlash(protocol.Outbox), protocol.KeepMarker)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	code, out, errs := w.messor(ctx, "pickup", "--lease", "2h")
	if code != 0 || !strings.Contains(out, "1 kept in the outbox until a receipt comes back") {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
	if _, out, _ = w.messor(ctx, "status"); !strings.Contains(out, "alpha: 0 receipt(s) waiting to go home, 1 lease(s) held") {
		t.Fatalf("status after pickup:\n%s", out)
	}
	if code, out, errs = w.messor(ctx, "dropoff"); code != 0 {
		t.Fatalf("dropoff: exit %d\n%s%s", code, out, errs)
	}
	if _, out, _ = w.messor(ctx, "status"); !strings.Contains(out, "alpha: 1 receipt(s) waiting to go home") {
		t.Fatalf("status after dropoff:\n%s", out)
	}
	code, out, errs = w.messor(ctx, "pickup")
	if code != 0 || !strings.Contains(out, "1 receipt(s) home, 1 kept file(s) removed by them") {
		t.Fatalf("pickup after dropoff: exit %d\n%s%s", code, out, errs)
	}
	ledger, err := os.ReadFile(filepath.Join(w.dirs["alpha"], filepath.FromSlash(protocol.LedgerPath("beta"))))
	if err != nil || !strings.HasSuffix(string(ledger), " report.pdf\n") {
		t.Fatalf("ledger: %q, %v", ledger, err)
	}
	if _, err := os.Stat(filepath.Join(w.dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "report.pdf")); err == nil {
		t.Fatal("report.pdf stays in the outbox after its receipt came home")
	}
}
