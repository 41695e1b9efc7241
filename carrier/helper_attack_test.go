package carrier

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestHelperCancelReturnsWhileCommandRuns: a command in the helper whose
// context ends returns then, while the command still runs on the host (a
// hash tool stuck on a dead disk must not hold the visit); the command is
// released only after the run has returned, or after a bound that fails
// the test.
func TestHelperCancelReturnsWhileCommandRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, dir, e := stockHelper(ctx, t)
	release := filepath.Join(dir, "release")
	defer os.WriteFile(release, nil, 0o600)
	cmd := "while [ ! -e " + release + " ]; do sleep 0.1; done; echo late"
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := e.helper.run(cctx, cmd, 0)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the command is in flight
	ccancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled command: %v, want %v", err, context.Canceled)
		}
	case <-time.After(20 * time.Second):
		os.WriteFile(release, nil, 0o600)
		t.Fatalf("cancelled command still waited for the host's command after 20s (returned %v once released)", <-done)
	}
	if s.helperUp(ctx) {
		t.Error("helper still up after a command in it was cancelled")
	}
	os.WriteFile(release, nil, 0o600)
	checkRangeHash(ctx, t, s, dir)
}

// TestExecCancelReturnsWhileCommandRuns: the same for a command in an exec
// session of its own (where there is no helper).
func TestExecCancelReturnsWhileCommandRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, dir, _ := stockHelper(ctx, t)
	release := filepath.Join(dir, "release")
	defer os.WriteFile(release, nil, 0o600)
	cmd := "while [ ! -e " + release + " ]; do sleep 0.1; done; echo late"
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.execOutput(cctx, cmd, 0)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the command is in flight
	ccancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		os.WriteFile(release, nil, 0o600)
		t.Fatalf("cancelled command still waited for the host's command after 20s (returned %v once released)", <-done)
	}
	os.WriteFile(release, nil, 0o600)
	checkRangeHash(ctx, t, s, dir)
}
