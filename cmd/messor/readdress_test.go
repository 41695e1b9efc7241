package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/internal/testenv"
)

// readdress gives a typo's files the right destination: delivered there
// once, and the typo no longer flagged.
func TestReaddress(t *testing.T) {
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "bta", map[string][]byte{"a.txt": []byte("typo\n"), "d/c.txt": []byte("typo too\n")})
	w.outbox("alpha", "beta", map[string][]byte{"a.txt": []byte("right\n")})
	ctx := context.Background()
	if code, out, errs := w.messor(ctx, "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := w.messor(ctx, "readdress", "nobody", "beta"); code != 2 || !strings.Contains(errs, "nothing carried for nobody") {
		t.Errorf("readdress nobody: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs := w.messor(ctx, "readdress", "bta", "beta")
	if code != 0 || !strings.Contains(out, "readdressed 2 file(s) from bta to beta") {
		t.Fatalf("readdress: exit %d\n%s%s", code, out, errs)
	}
	holds(t, w.bufferDir(), 3)
	if code, out, errs = w.messor(ctx, "status"); code != 0 || strings.Contains(out, "bta") {
		t.Errorf("status after readdress: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = w.messor(ctx, "dropoff")
	if code != 0 || !strings.Contains(out, "dropoff: beta: delivered 3 file(s)") || strings.Contains(out, "bta") {
		t.Errorf("dropoff: exit %d\n%s%s", code, out, errs)
	}
	got := testenv.ReadTree(t, filepath.Join(w.dirs["beta"], "messor", "inbox", "alpha"))
	if len(got) != 3 || string(got["d/c.txt"]) != "typo too\n" {
		t.Errorf("beta's inbox: %v", got)
	}
	holds(t, w.bufferDir(), 0)
	if code, out, errs = w.messor(ctx, "dropoff"); code != 0 || strings.Contains(out, "delivered") {
		t.Errorf("second dropoff: exit %d\n%s%s", code, out, errs)
	}
}
