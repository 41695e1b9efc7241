package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/carrier"
)

// TestBufferDefault: the buffer lives outside ~/messor (which the agent
// serves): in $XDG_DATA_HOME/messor/buffer, else
// ~/.local/share/messor/buffer; $MESSOR_BUFFER and --buffer win.
func TestBufferDefault(t *testing.T) {
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha")
	ctx := context.Background()
	pickup := func(name string, args ...string) {
		t.Helper()
		w.outbox("alpha", "beta", map[string][]byte{name: []byte(name)})
		if code, out, errs := w.messor(ctx, append(args, "pickup")...); code != 0 {
			t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
		}
	}
	pickup("a.txt")
	holds(t, w.bufferDir(), 1)
	if _, err := os.Stat(filepath.Join(w.home.Dir, "messor")); err == nil {
		t.Errorf("~/messor was made on the carrier")
	}

	xdg := filepath.Join(w.home.Dir, "xdg")
	t.Setenv("XDG_DATA_HOME", xdg)
	pickup("b.txt")
	holds(t, filepath.Join(xdg, "messor", "buffer"), 1)

	env := filepath.Join(w.home.Dir, "env-buffer")
	t.Setenv("MESSOR_BUFFER", env)
	pickup("c.txt")
	holds(t, env, 1)

	flag := filepath.Join(w.home.Dir, "flag-buffer")
	pickup("d.txt", "--buffer", flag)
	holds(t, flag, 1)
}

// TestLegacyBufferMoved: a buffer at ~/messor/buffer, where messor kept it
// before, is moved to the new default (a rename) by the next run, with what
// it carries; where it cannot be moved it is used in place, with a warning
// naming both places and how to move it.
func TestLegacyBufferMoved(t *testing.T) {
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha")
	ctx := context.Background()
	legacy := filepath.Join(w.home.Dir, "messor", "buffer")
	w.outbox("alpha", "beta", map[string][]byte{"old.txt": []byte("carried before\n")})
	if code, out, errs := w.messor(ctx, "--buffer", legacy, "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}

	// The new default's parent cannot be made: used in place.
	blocker := filepath.Join(w.home.Dir, "blocked")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_DATA_HOME", blocker)
	code, out, errs := w.messor(ctx, "status")
	if code != 0 || !strings.Contains(out, "1 file(s)") {
		t.Errorf("status with the buffer in place: exit %d\n%s%s", code, out, errs)
	}
	newDir := filepath.Join(blocker, "messor", "buffer")
	if !strings.Contains(errs, "in place") || !strings.Contains(errs, legacy) || !strings.Contains(errs, "mv "+legacy+" "+newDir) {
		t.Errorf("no warning naming both places and how to move it:\n%s", errs)
	}
	holds(t, legacy, 1)

	// Another run has it open: not moved under it.
	t.Setenv("XDG_DATA_HOME", "")
	buf, err := carrier.OpenBuffer(legacy, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs = w.messor(ctx, "status")
	buf.Close()
	if !strings.Contains(errs, "in place") {
		t.Errorf("a buffer in use was not left in place: exit %d\n%s", code, errs)
	}

	// Now it can move.
	code, out, errs = w.messor(ctx, "status")
	if code != 0 || !strings.Contains(out, "1 file(s)") || errs != "" {
		t.Errorf("status after the move: exit %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", legacy, err)
	}
	holds(t, w.bufferDir(), 1)
	if code, out, errs := w.messor(ctx, "dropoff"); code != 0 || !strings.Contains(out, "delivered 1 file(s)") {
		t.Errorf("dropoff from the moved buffer: exit %d\n%s%s", code, out, errs)
	}

	// A buffer left at the old place beside one at the new: the new is
	// used, and the old one named.
	w.outbox("alpha", "beta", map[string][]byte{"later.txt": []byte("carried by an older messor\n")})
	if code, out, errs := w.messor(ctx, "--buffer", legacy, "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
	if _, _, errs := w.messor(ctx, "status"); !strings.Contains(errs, legacy) || !strings.Contains(errs, "--buffer "+legacy) {
		t.Errorf("no word of the buffer left at %s:\n%s", legacy, errs)
	}
}

// holds fails unless the buffer in dir holds n entries.
func holds(t *testing.T, dir string, n int) {
	t.Helper()
	b, err := carrier.OpenBufferReadOnly(dir)
	if err != nil {
		t.Fatalf("buffer %s: %v", dir, err)
	}
	defer b.Close()
	if ents, err := b.Entries(); err != nil || len(ents) != n {
		t.Errorf("buffer %s holds %d entries (%v), want %d", dir, len(ents), err, n)
	}
}
