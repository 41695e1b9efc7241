package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/messor-sync/messor/protocol"
)

// Without -v, warnings are plain lines, each once: a symlink in an outbox
// is mentioned once however many rounds watch makes.
func TestWarningsOnceAndPlain(t *testing.T) {
	w := newWorld(t, "alpha")
	w.home.WriteHostsFile("alpha")
	box := filepath.Join(w.dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")))
	if err := os.MkdirAll(box, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(box, "link")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb lockedBuf
	go func() {
		done <- run(ctx, []string{"--settle", "0", "watch", "--interval", "50ms"}, &out, &errb)
	}()
	// Wait for several rounds: each lists the outbox (sshd logs each login).
	for deadline := time.Now().Add(30 * time.Second); strings.Count(errb.String(), "beta/link") < 2 && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		if strings.Count(errb.String(), "beta/link") == 1 {
			time.Sleep(time.Second) // rounds went by; a second mention would be there
			break
		}
	}
	cancel()
	code := <-done
	errs := errb.String()
	if code != 0 || strings.Contains(errs, "level=") || strings.Contains(errs, "time=") || strings.Count(errs, "beta/link") != 1 {
		t.Errorf("watch: exit %d, want the symlink warned about once, plainly\n%s%s", code, out.String(), errs)
	}
}
