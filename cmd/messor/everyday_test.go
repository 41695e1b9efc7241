package main

import (
	"context"
	"strings"
	"testing"
)

// A host out of range says why, once; a name that resolves nowhere (a typo
// in the hosts file) is a configuration error, exit 2, once the other hosts
// are served.
func TestUnreachableSaysWhy(t *testing.T) {
	w := newWorld(t, "alpha")
	w.home.AddHostAddr("away", "127.0.0.1", 1)
	w.home.WriteHostsFile("away", "alpha")
	w.outbox("alpha", "beta", map[string][]byte{"x": []byte("x")})
	ctx := context.Background()
	code, out, errs := w.messor(ctx, "pickup")
	if code != 0 || !strings.Contains(out, "pickup: away: skipped, not reachable: connection refused") || strings.Count(out+errs, "away") != 1 {
		t.Errorf("refused: exit %d, want 0 and the cause once\n%s%s", code, out, errs)
	}

	w.home.WriteHostsFile("ofice.invalid", "alpha")
	w.outbox("alpha", "beta", map[string][]byte{"y": []byte("y")})
	code, out, errs = w.messor(ctx, "pickup")
	if code != 2 || !strings.Contains(out, "pickup: ofice.invalid: no such host") || !strings.Contains(out, "picked up 1 file(s)") || strings.Count(out+errs, "ofice") != 1 {
		t.Errorf("no such host: exit %d, want 2, the cause once, and alpha served\n%s%s", code, out, errs)
	}
}
