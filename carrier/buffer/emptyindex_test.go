package buffer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A carrier killed inside its first Open, after the index file was created
// and before bbolt wrote its first pages, leaves a zero-length index.db.
// That buffer never carried anything: status (read-only) reports it empty
// instead of calling it damaged, and the next Open sets it up. Beside
// record files a zero-length index is a lost one, as a missing index is.
func TestZeroLengthIndex(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := os.Truncate(filepath.Join(dir, "index.db"), 0); err != nil {
		t.Fatal(err)
	}
	rb, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatalf("status of a buffer whose index was cut at its making: %v, want an empty buffer", err)
	}
	if ents, err := rb.Entries(); err != nil || len(ents) != 0 {
		t.Errorf("entries of the empty buffer: %d, %v", len(ents), err)
	}
	rb.Close()
	b, err = Open(dir, 0)
	if err != nil {
		t.Fatalf("open of a buffer whose index was cut at its making: %v", err)
	}
	b.Close()

	_, old, _, _ := legacyWorld(t, 2)
	if err := os.Truncate(filepath.Join(old, "index.db"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(old); !errors.Is(err, ErrIndexCorrupt) {
		t.Errorf("status of a buffer with records and a zero-length index: %v, want ErrIndexCorrupt", err)
	}
	if _, err := Open(old, 0); !errors.Is(err, ErrIndexCorrupt) {
		t.Errorf("open of a buffer with records and a zero-length index: %v, want ErrIndexCorrupt", err)
	}
}
