package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/testenv"
)

// sync delivers in the same run what it just picked up, to destinations
// not found out of range in that run: one line per host and verb, and a
// destination out of range is dialed once.
func TestSyncOnePass(t *testing.T) {
	w := newWorld(t, "alpha", "beta", "gamma")
	w.home.AddHostAddr("away", "127.0.0.1", 1)
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", map[string][]byte{"old.txt": []byte("old\n")})
	w.outbox("alpha", "away", map[string][]byte{"old.txt": []byte("old\n")})
	ctx := context.Background()
	if code, out, errs := w.messor(ctx, "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
	w.outbox("alpha", "beta", map[string][]byte{"new.txt": []byte("new\n")})
	w.outbox("alpha", "gamma", map[string][]byte{"g.txt": []byte("g\n")})
	w.outbox("alpha", "away", map[string][]byte{"new.txt": []byte("new\n")})

	code, out, errs := w.messor(ctx, "sync")
	for _, want := range []string{
		"dropoff: beta: delivered 2 file(s)",
		"dropoff: gamma: delivered 1 file(s)",
		"pickup: alpha: picked up 3 file(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sync lacks %q", want)
		}
	}
	if code != 0 || strings.Count(out, "dropoff: beta") != 1 || strings.Count(out+errs, "away") != 1 {
		t.Errorf("sync: exit %d, want 0, one line per host and verb\n%s%s", code, out, errs)
	}
	if got := testenv.ReadTree(t, filepath.Join(w.dirs["beta"], "messor", "inbox", "alpha")); len(got) != 2 {
		t.Errorf("beta's inbox after one sync: %v", got)
	}
	if got := testenv.ReadTree(t, filepath.Join(w.dirs["gamma"], "messor", "inbox", "alpha")); len(got) != 1 {
		t.Errorf("gamma's inbox after one sync: %v", got)
	}

	// --dry-run moves nothing and says what the first pass would do;
	// --json has one object per host and verb.
	w.outbox("alpha", "beta", map[string][]byte{"third.txt": []byte("3\n")})
	code, out, errs = w.messor(ctx, "sync", "--dry-run")
	if code != 0 || !strings.Contains(out, "pickup: alpha: would pick up 1 file(s)") || strings.Contains(out, "dropoff: beta") {
		t.Errorf("sync --dry-run: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = w.messor(ctx, "sync", "--json")
	var rep carrier.RunReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Hosts) != 3 {
		t.Fatalf("sync --json: exit %d\n%s%s", code, out, errs)
	}
	for _, h := range rep.Hosts {
		if h.Host == "beta" && (h.Verb != "dropoff" || h.Files != 1) {
			t.Errorf("sync --json: beta is %+v", h)
		}
	}
}
