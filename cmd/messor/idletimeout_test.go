package main

import (
	"context"
	"strings"
	"testing"
)

// --idle-timeout: a negative value is a usage error (0 is the way to wait
// for ever), and a tiny one gives up on the host rather than crashing
// the run.
func TestIdleTimeoutFlag(t *testing.T) {
	w := newWorld(t, "alpha")
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", map[string][]byte{"a.txt": []byte("a\n")})
	ctx := context.Background()
	if code, out, errs := w.messor(ctx, "--idle-timeout", "-5s", "pickup"); code != exitUsage || !strings.Contains(errs, "--idle-timeout") {
		t.Errorf("--idle-timeout -5s: exit %d, want %d naming the flag\n%s%s", code, exitUsage, out, errs)
	}
	for _, d := range []string{"1ns", "3ns"} {
		if code, out, errs := w.messor(ctx, "--idle-timeout", d, "pickup"); code == exitUsage {
			t.Errorf("--idle-timeout %s: exit %d, want a run\n%s%s", d, code, out, errs)
		}
	}
}
