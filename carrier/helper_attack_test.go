package carrier

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkCancelReturns runs a command by run that waits on the host until a
// file appears, cancels it, and checks that run returns while the command
// still runs there (a hash tool stuck on a dead disk must not hold the
// visit): the command is released only after run has returned, or after a
// bound that fails the test. Then the session still hashes.
func checkCancelReturns(t *testing.T, run func(ctx context.Context, s *Session, cmd string) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, dir, _ := stockHelper(ctx, t)
	release := filepath.Join(dir, "release")
	defer os.WriteFile(release, nil, 0o600)
	cmd := "while [ ! -e " + release + " ]; do sleep 0.1; done; echo late"
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(cctx, s, cmd) }()
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
	os.WriteFile(release, nil, 0o600)
	checkRangeHash(ctx, t, s, dir)
}

// TestHelperCancelReturnsWhileCommandRuns: checkCancelReturns for a
// command in the exec helper, which is closed then.
func TestHelperCancelReturnsWhileCommandRuns(t *testing.T) {
	checkCancelReturns(t, func(ctx context.Context, s *Session, cmd string) error {
		e := s.caps(ctx).hasher.(*execHasher)
		_, err := e.helper.run(ctx, cmd, 0)
		if s.helperUp(context.Background()) {
			t.Error("helper still up after a command in it was cancelled")
		}
		return err
	})
}

// TestExecCancelReturnsWhileCommandRuns: checkCancelReturns for a command
// in an exec session of its own (where there is no helper).
func TestExecCancelReturnsWhileCommandRuns(t *testing.T) {
	checkCancelReturns(t, func(ctx context.Context, s *Session, cmd string) error {
		_, err := s.execOutput(ctx, cmd, 0)
		return err
	})
}

// TestHelperCommandNeverAnswers: a command in the helper that never
// answers returns once its time is up, saying so; the helper is closed
// and the session still hashes.
func TestHelperCommandNeverAnswers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // a hang guard, not a timing
	defer cancel()
	s, dir, e := stockHelper(ctx, t)
	_, err := e.helper.run(ctx, "sleep 3600", 500*time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("the command hung until the test's deadline")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no reply within 500ms") {
		t.Fatalf("a command that never answers: %v, want no reply within 500ms", err)
	}
	if s.helperUp(ctx) {
		t.Error("helper still up after a command in it timed out")
	}
	checkRangeHash(ctx, t, s, dir)
}
