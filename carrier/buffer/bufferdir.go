package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/messor-sync/messor/internal/durable"
)

// DefaultDir is where a carrier keeps its buffer unless told
// otherwise: $XDG_DATA_HOME/messor/buffer (xdgDataHome, if absolute), else
// home/.local/share/messor/buffer. Never under home/messor, which
// `messor agent` serves to carriers.
func DefaultDir(home, xdgDataHome string) string {
	if filepath.IsAbs(xdgDataHome) {
		return filepath.Join(xdgDataHome, "messor", "buffer")
	}
	return filepath.Join(home, ".local", "share", "messor", "buffer")
}

// LegacyDir is where messor kept its buffer by default before: inside
// the directory the agent serves.
func LegacyDir(home string) string {
	return filepath.Join(home, "messor", "buffer")
}

// LegacyError says that the buffer at Old, where messor kept it
// before, was not moved to New: it is used in place (InPlace), or it is
// left alone because New holds a buffer already.
type LegacyError struct {
	Old, New string
	InPlace  bool
	Link     string // where Old, a symbolic link, points (used in place)
	Err      error
}

// Error says which buffer is used and what to do about the other.
func (e *LegacyError) Error() string {
	if e.Link != "" {
		return fmt.Sprintf("using the buffer at %s, a symbolic link to %s, in place (not moved to %s, the new default); "+
			"name it with --buffer or $MESSOR_BUFFER to keep it there", e.Old, e.Link, e.New)
	}
	if e.InPlace {
		return fmt.Sprintf("using the buffer at %s in place (could not move it to %s, the new default: %v); "+
			"a messor agent on this host no longer serves it, but move it when no messor runs: mv %s %s",
			e.Old, e.New, e.Err, e.Old, e.New)
	}
	return fmt.Sprintf("a buffer is still at %s, where messor kept it before, and another at %s, the new default, "+
		"which is used; deliver what the old one carries with: messor --buffer %s dropoff",
		e.Old, e.New, e.Old)
}

// Unwrap returns why the legacy buffer could not be moved, if it was tried.
func (e *LegacyError) Unwrap() error { return e.Err }

// MoveLegacy finds the buffer to use by default: dir (see
// DefaultDir), after moving a buffer found at old (see
// LegacyDir) there, by a rename (the same file system) and only while
// no run has it open. The error, if any, is a *LegacyError to warn
// about: the directory returned is the one to use all the same.
func MoveLegacy(old, dir string) (string, error) {
	if !isBuffer(old) {
		return dir, nil
	}
	// A link moved elsewhere may point nowhere (a relative target).
	if fi, err := os.Lstat(old); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(old)
		return old, &LegacyError{Old: old, New: dir, InPlace: true, Link: target}
	}
	if _, err := os.Lstat(dir); err == nil {
		if isBuffer(dir) {
			return dir, &LegacyError{Old: old, New: dir}
		}
		// An empty directory (made by hand, or by a run that failed
		// before it wrote anything) is taken over.
		if err := os.Remove(dir); err != nil {
			return old, &LegacyError{Old: old, New: dir, InPlace: true, Err: err}
		}
	}
	for _, p := range []string{old, filepath.Join(old, "index.db")} { // Recover's, a run's
		unlock, busy := lockPath(p)
		if busy {
			return old, &LegacyError{Old: old, New: dir, InPlace: true, Err: ErrBusy}
		}
		defer unlock() // held across the move, so no run opens the buffer meanwhile
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return old, &LegacyError{Old: old, New: dir, InPlace: true, Err: err}
	}
	if err := os.Rename(old, dir); err != nil {
		return old, &LegacyError{Old: old, New: dir, InPlace: true, Err: err}
	}
	durable.SyncDir(filepath.Dir(dir))
	durable.SyncDir(filepath.Dir(old))
	return dir, nil
}

// isBuffer reports whether dir holds a buffer: its index, or record files
// of carried files (an index lost, for `messor recover` to rebuild).
func isBuffer(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "index.db"))
	return err == nil || !errors.Is(err, fs.ErrNotExist) || countRecordFiles(dir) > 0
}
