package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
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

// status answers while watch holds the buffer.
func TestStatusWhileWatching(t *testing.T) {
	w := newWorld(t, "alpha")
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", map[string][]byte{"a.txt": []byte("carried\n")})
	ctx := context.Background()
	if code, out, errs := w.messor(ctx, "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
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
