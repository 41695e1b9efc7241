package buffer

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDropStalePartials(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Now().Unix()
	live := Origin{"alpha", "beta", "a.txt", 100, mtime}
	gone := Origin{"alpha", "beta", "old.txt", 100, mtime}
	other := Origin{"gamma", "beta", "x", 100, mtime}
	// Partials left by an earlier run.
	os.MkdirAll(filepath.Join(dir, "partial"), 0o700)
	for _, o := range []Origin{live, gone, other} {
		os.WriteFile(filepath.Join(dir, "partial", o.PartialName()), make([]byte, 40), 0o600)
	}
	b, err := Open(dir, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Used() != 120 {
		t.Fatalf("partials count %d bytes, want 120", b.Used())
	}
	n, freed := b.DropStalePartials("alpha", map[string]bool{live.PartialName(): true})
	if n != 1 || freed != 40 || b.Used() != 80 {
		t.Fatalf("dropped %d (%d bytes), used %d; want 1, 40, 80", n, freed, b.Used())
	}
	for o, want := range map[Origin]bool{live: true, gone: false, other: true} {
		_, err := os.Stat(b.PartialPath(o))
		if (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", o.Path, err == nil, want)
		}
	}
}
