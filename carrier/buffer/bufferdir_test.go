package buffer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// legacyWorld makes a home with a buffer carrying n files where messor
// kept it before, and returns the home, the old place and the new default.
func legacyWorld(t *testing.T, n int) (home, old, dir string, ents []Entry) {
	t.Helper()
	home = t.TempDir()
	old = LegacyDir(home)
	ents = carriedBuffer(t, old, n, 4<<10)
	return home, old, DefaultDir(home, ""), ents
}

// An old buffer that is a symbolic link (to a relative place) is used where
// it points, not moved as a link that then points nowhere.
func TestLegacyBufferSymlink(t *testing.T) {
	home := t.TempDir()
	real := filepath.Join(home, "bufdata")
	ents := carriedBuffer(t, real, 2, 4<<10)
	old := LegacyDir(home)
	os.MkdirAll(filepath.Dir(old), 0o700)
	if err := os.Symlink("../bufdata", old); err != nil {
		t.Fatal(err)
	}
	got, err := MoveLegacy(old, DefaultDir(home, ""))
	var le *LegacyError
	if !errors.As(err, &le) || le.Link != "../bufdata" {
		t.Errorf("MoveLegacy = %s, %v; want a warning naming the link's target", got, err)
	}
	carries(t, got, len(ents))
}

// An old buffer whose index is lost (record files, no index.db, nor the
// empty directory of an older kind of record) is still found, so that `messor recover` recovers it rather than an empty new one.
func TestLegacyBufferWithoutIndex(t *testing.T) {
	_, old, dir, ents := legacyWorld(t, 2)
	os.Remove(filepath.Join(old, "index.db"))
	os.Remove(filepath.Join(old, "entries")) // empty: a copy may not keep it
	if _, err := OpenReadOnly(old); !errors.Is(err, ErrIndexCorrupt) {
		t.Errorf("status of the old buffer: %v, want ErrIndexCorrupt", err)
	}
	got, err := MoveLegacy(old, dir)
	t.Logf("moved to %s (%v)", got, err)
	rep, err := Recover(got)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored != len(ents) {
		t.Fatalf("recover of %s restored %d of the %d files the old buffer carries", got, rep.Restored, len(ents))
	}
}

// The new default on another file system (rename fails with EXDEV): the
// old buffer is used in place, with a warning, and carries what it did.
func TestLegacyBufferOtherFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs: run it as root")
	}
	home, old, dir, ents := legacyWorld(t, 2)
	share := filepath.Join(home, ".local", "share")
	os.MkdirAll(share, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", share).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	defer syscall.Unmount(share, syscall.MNT_DETACH)
	got, err := MoveLegacy(old, dir)
	var le *LegacyError
	if got != old || !errors.As(err, &le) || !le.InPlace || !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("MoveLegacy = %s, %v; want %s in place (EXDEV)", got, err, old)
	}
	carries(t, old, len(ents))
}
