package buffer

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// editIndex changes dir's index (closed) in one transaction: damage a test
// needs.
func editIndex(t *testing.T, dir string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// emptyIndex replaces dir's index with one set up but empty.
func emptyIndex(t *testing.T, dir string) {
	t.Helper()
	os.Remove(filepath.Join(dir, "index.db"))
	editIndex(t, dir, createBuckets)
}

// openCarrying opens the buffer in dir, closed when the test ends, and
// fails the test unless it carries n entries.
func openCarrying(t *testing.T, dir string, n int) *Buffer {
	t.Helper()
	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if got, _ := b.Entries(); len(got) != n {
		t.Fatalf("buffer %s carries %d entries, want %d", dir, len(got), n)
	}
	return b
}

// carries fails unless the buffer in dir opens for reading (as status
// does) and carries n entries.
func carries(t *testing.T, dir string, n int) {
	t.Helper()
	b, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatalf("buffer %s: %v", dir, err)
	}
	defer b.Close()
	if got, _ := b.Entries(); len(got) != n {
		t.Fatalf("buffer %s carries %d entries, want %d", dir, len(got), n)
	}
}

// deliverAll releases ents from b and fails the test unless that leaves no
// record file.
func deliverAll(t *testing.T, b *Buffer, ents []Entry) {
	t.Helper()
	for _, e := range ents {
		b.Release(e)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if f := recordFiles(t, b.dir); len(f) != 0 {
		t.Errorf("record files left after every entry was delivered: %v", f)
	}
}
