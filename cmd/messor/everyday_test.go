package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/testenv"
	"github.com/messor-sync/messor/protocol"
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

	// sync tries away twice (dropoff, then pickup): the cause is still said once.
	w.home.AddHostAddr("beta", "127.0.0.1", 1)
	code, out, errs = w.messor(ctx, "sync", "away", "beta")
	if code != 0 || strings.Count(out+errs, "away: skipped, not reachable: connection refused") != 1 || strings.Count(out+errs, "beta: skipped, not reachable: connection refused") != 1 {
		t.Errorf("sync: exit %d, want 0 and each cause once\n%s%s", code, out, errs)
	}

	w.home.WriteHostsFile("ofice.invalid", "alpha")
	w.outbox("alpha", "beta", map[string][]byte{"y": []byte("y")})
	code, out, errs = w.messor(ctx, "pickup")
	if code != 2 || !strings.Contains(out, "pickup: ofice.invalid: no such host") || !strings.Contains(out, "picked up 1 file(s)") || strings.Count(out+errs, "ofice") != 1 {
		t.Errorf("no such host: exit %d, want 2, the cause once, and alpha served\n%s%s", code, out, errs)
	}
}

// status answers while watch holds the buffer.
func TestStatusWhileWatching(t *testing.T) {
	w := carrying(t, map[string][]byte{"a.txt": []byte("carried\n")}, "alpha")
	ctx := context.Background()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var wout, werr lockedBuf
	go func() {
		done <- run(wctx, []string{"--settle", "0", "watch", "--interval", "1h"}, &wout, &werr)
	}()
	defer func() { cancel(); <-done }()
	var code int
	var out, errs string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		code, out, errs = w.messor(ctx, "status")
		if strings.Contains(errs, "in use by another messor run") && !strings.Contains(wout.String(), "checking for hosts") {
			continue // watch has the lock but is not yet serving
		}
		break
	}
	if code != 0 || !strings.Contains(out, "1 file(s)") || !strings.Contains(out, "beta") {
		t.Fatalf("status while watching: exit %d, want 0 and the carried file\n%s%s", code, out, errs)
	}
	code, out, errs = w.messor(ctx, "status", "--json")
	if code != 0 || !strings.Contains(out, `"files": 1`) {
		t.Fatalf("status --json while watching: exit %d\n%s%s", code, out, errs)
	}
}

// lockedBuf is a bytes.Buffer a run may write while the test reads it.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// --version, -q, host arguments, --dry-run and --json on pickup, dropoff
// and sync.
func TestEverydayFlags(t *testing.T) {
	w := newWorld(t, "alpha", "gamma", "beta")
	w.home.WriteHostsFile("alpha", "gamma")
	w.outbox("alpha", "beta", map[string][]byte{"a.txt": []byte("from alpha\n")})
	w.outbox("gamma", "beta", map[string][]byte{"g.txt": []byte("from gamma\n"), "big.bin": bytes.Repeat([]byte{1}, 3000)})
	ctx := context.Background()

	if code, out, errs := w.messor(ctx, "--version"); code != 0 || !strings.HasPrefix(out, "messor version ") {
		t.Errorf("--version: exit %d\n%s%s", code, out, errs)
	}

	for _, c := range []string{"pickup", "dropoff", "sync", ""} {
		_, out, _ := w.messor(ctx, c, "--help")
		wants := []string{"[HOST...]", "--dry-run", "--json", "schema 1", "--quiet"}
		if c == "" {
			wants = []string{"--quiet", "--version"}
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("messor %s --help lacks %q", c, want)
			}
		}
	}

	// --dry-run says what would move and what would wait, and moves nothing.
	code, out, errs := w.messor(ctx, "--limit", "2000", "pickup", "--dry-run", "gamma")
	if code != 0 || !strings.Contains(out, "pickup: gamma: would pick up 1 file(s), 11 B; 1 waiting (1 larger than the whole buffer limit (2.0 KiB))") || strings.Contains(out, "alpha") {
		t.Errorf("pickup --dry-run gamma: exit %d\n%s%s", code, out, errs)
	}
	if got := testenv.ReadTree(t, filepath.Join(w.dirs["gamma"], "messor", "outbox", "beta")); len(got) != 2 {
		t.Errorf("dry run moved files: outbox holds %v", got)
	}

	// Host arguments are names: a path is bad usage; one given twice is
	// visited once; a destination nothing is carried for says so.
	if code, out, errs := w.messor(ctx, "pickup", "../etc"); code != 2 || !strings.Contains(errs, "../etc") {
		t.Errorf("pickup ../etc: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := w.messor(ctx, "dropoff", "--dry-run", "gamma", "gamma"); code != 0 || strings.Count(out, "dropoff: gamma: nothing carried for it") != 1 {
		t.Errorf("dropoff gamma gamma: exit %d\n%s%s", code, out, errs)
	}

	// A host argument: only that host.
	code, out, errs = w.messor(ctx, "pickup", "alpha")
	if code != 0 || !strings.Contains(out, "pickup: alpha: picked up 1 file(s)") || strings.Contains(out, "gamma") {
		t.Errorf("pickup alpha: exit %d\n%s%s", code, out, errs)
	}

	// --json: one object per host, versioned.
	code, out, errs = w.messor(ctx, "--limit", "2000", "pickup", "--json")
	var rep carrier.RunReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Schema != 1 || len(rep.Hosts) != 2 {
		t.Fatalf("pickup --json: exit %d\n%s%s", code, out, errs)
	}
	if g := rep.Hosts[1]; g.Host != "gamma" || g.Outcome != "done" || g.Files != 1 || len(g.Waiting) != 1 || g.Waiting[0].Reason == "" {
		t.Errorf("pickup --json: gamma is %+v", g)
	}

	// -q: nothing on a clean run.
	code, out, errs = w.messor(ctx, "-q", "dropoff", "--dry-run", "beta")
	if code != 0 || out != "" || errs != "" {
		t.Errorf("-q dropoff --dry-run: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = w.messor(ctx, "sync", "--json", "beta")
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Command != "sync" || len(rep.Hosts) != 2 || rep.Hosts[0].Verb != "dropoff" || rep.Hosts[0].Files != 2 {
		t.Errorf("sync --json beta: exit %d\n%s%s", code, out, errs)
	}
	if got := testenv.ReadTree(t, filepath.Join(w.dirs["beta"], "messor", "inbox")); len(got)-countPrefix(got, protocol.ReceiptsDirName+"/") != 2 {
		t.Errorf("beta's inbox: %v", got)
	}
}

// A pickup host without an outbox says so and how to make one; a file that
// can never fit the limit says so, once.
func TestNoOutboxAndNeverFits(t *testing.T) {
	w := newWorld(t, "alpha", "gamma")
	w.home.WriteHostsFile("alpha", "gamma")
	if err := os.RemoveAll(filepath.Join(w.dirs["alpha"], "messor", "outbox")); err != nil {
		t.Fatal(err)
	}
	w.outbox("gamma", "beta", map[string][]byte{"big.bin": bytes.Repeat([]byte{1}, 3000), "small.txt": []byte("fits\n")})
	code, out, errs := w.messor(context.Background(), "--limit", "1000", "pickup")
	if code != 0 || !strings.Contains(out, "pickup: alpha: no messor/outbox/ in the login directory (create it with mkdir -p ~/messor/outbox/<dest>)") {
		t.Errorf("no outbox: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out+errs, "never fits: beta/big.bin: larger than the whole buffer limit (1000 B); raise --limit") || strings.Count(out+errs, "big.bin") != 1 || !strings.Contains(out, "picked up 1 file(s)") {
		t.Errorf("never fits: exit %d\n%s%s", code, out, errs)
	}
}

// carrying is a world of names whose carrier picked up files from alpha,
// its only pickup host, for beta.
func carrying(t *testing.T, files map[string][]byte, names ...string) *world {
	t.Helper()
	w := newWorld(t, names...)
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", files)
	if code, out, errs := w.messor(context.Background(), "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
	return w
}

// watch says once that a name resolves nowhere, and goes on with the others.
func TestWatchNoSuchHostOnce(t *testing.T) {
	w := newWorld(t, "alpha")
	w.home.WriteHostsFile("ofice.invalid", "alpha")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb lockedBuf
	go func() {
		done <- run(ctx, []string{"--settle", "0", "watch", "--interval", "50ms"}, &out, &errb)
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "no such host") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // rounds go by; a second mention would be there
	cancel()
	code := <-done
	if code != 0 || strings.Count(out.String(), "ofice.invalid: no such host") != 1 {
		t.Errorf("watch: exit %d, want the typo said once\n%s%s", code, out.String(), errb.String())
	}
}

// countPrefix counts the paths of tree that begin with prefix.
func countPrefix(tree map[string][]byte, prefix string) int {
	n := 0
	for p := range tree {
		if strings.HasPrefix(p, prefix) {
			n++
		}
	}
	return n
}
