package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/carrier"
)

// status flags a destination never seen (a typo); drop asks on a terminal,
// wants --yes elsewhere, and takes entries out through the buffer's
// release path (records and objects go with them).
func TestNeverSeenAndDrop(t *testing.T) {
	bin := buildMessor(t)
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "hom", map[string][]byte{"a.txt": []byte("typo\n"), "d/c.txt": []byte("typo too\n")})
	w.outbox("alpha", "beta", map[string][]byte{"x.txt": []byte("for beta\n")})
	ctx := context.Background()
	if code, out, errs := w.messor(ctx, "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}

	code, out, errs := w.messor(ctx, "status")
	if code != 0 || !strings.Contains(out, "hom: never seen") || strings.Contains(out, "beta: never seen") {
		t.Errorf("status: exit %d, want hom flagged, beta not\n%s%s", code, out, errs)
	}
	var st carrier.Status
	code, out, _ = w.messor(ctx, "status", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.NeverSeen) != 1 || st.NeverSeen[0] != "hom" {
		t.Errorf("status --json: exit %d, never_seen %v\n%s", code, st.NeverSeen, out)
	}

	// Not on a terminal and no --yes: nothing is dropped.
	code, out, errs = w.messor(ctx, "drop", "hom")
	if code != 2 || !strings.Contains(errs, "--yes") {
		t.Errorf("drop without --yes: exit %d\n%s%s", code, out, errs)
	}
	holds(t, w.bufferDir(), 3)
	if code, out, errs = w.messor(ctx, "drop", "nobody", "--yes"); code != 2 || !strings.Contains(errs, "nothing carried for nobody") {
		t.Errorf("drop nobody: exit %d\n%s%s", code, out, errs)
	}

	// One path, with --yes.
	code, out, errs = w.messor(ctx, "drop", "hom", "d/c.txt", "--yes")
	if code != 0 || !strings.Contains(out, "dropped 1 file(s) carried for hom") {
		t.Errorf("drop hom d/c.txt: exit %d\n%s%s", code, out, errs)
	}
	holds(t, w.bufferDir(), 2)

	// On a terminal, the drop asks; "n" keeps, "y" drops.
	if shown, err := onTerminal(t, "n\n", bin, "drop", "hom"); err == nil || !strings.Contains(shown, "drop 1 file(s)") {
		t.Errorf("drop on a terminal, answered n: %v\n%s", err, shown)
	}
	holds(t, w.bufferDir(), 2)
	if shown, err := onTerminal(t, "y\n", bin, "drop", "hom"); err != nil || !strings.Contains(shown, "dropped 1 file(s) carried for hom") {
		t.Errorf("drop on a terminal, answered y: %v\n%s", err, shown)
	}
	holds(t, w.bufferDir(), 1)
	if objs, _ := filepath.Glob(filepath.Join(w.bufferDir(), "objects", "*", "*")); len(objs) != 1 {
		t.Errorf("objects left after the drop: %v", objs)
	}
	if code, out, errs = w.messor(ctx, "status"); code != 0 || strings.Contains(out, "never seen") {
		t.Errorf("status after the drop: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = w.messor(ctx, "recover"); code != 0 {
		t.Errorf("recover after the drop: exit %d\n%s%s", code, out, errs)
	}
	holds(t, w.bufferDir(), 1)
}
