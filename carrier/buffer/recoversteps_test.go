package buffer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// What a recover killed at each of its steps leaves (or a power loss that
// undid a rename not yet made durable by the directory's sync): an open
// either refuses (ErrIndexCorrupt) or carries every file, and a recover
// run again carries every file; no object or record goes.
func TestRecoverStepStates(t *testing.T) {
	steps := []struct {
		name string
		make func(t *testing.T, dir string) // from a buffer with a damaged index and a finished recover's files aside
	}{
		{"index missing, half-built rebuild", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "index.db"))
			halfRebuild(t, dir)
		}},
		{"damaged index, half-built rebuild", func(t *testing.T, dir string) { halfRebuild(t, dir) }},
		{"damaged index, empty rebuild", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "index.db.rebuild"), nil, 0o600)
		}},
		{"index truncated to 0 bytes", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, "index.db"), 0)
		}},
		{"linked aside, rebuild whole, not renamed", func(t *testing.T, dir string) {
			os.Link(filepath.Join(dir, "index.db"), filepath.Join(dir, "index.db.corrupt-1"))
			wholeRebuild(t, dir)
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			dir := t.TempDir()
			ents := carriedBuffer(t, dir, 4, 32<<10)
			damageIndex(t, dir)
			st.make(t, dir)
			if b, err := Open(dir, 1<<40); err == nil {
				got, _ := b.Entries()
				b.Close()
				if len(got) != len(ents) {
					t.Fatalf("open carries %d entries, want %d", len(got), len(ents))
				}
			} else if !errors.Is(err, ErrIndexCorrupt) {
				t.Fatalf("open: %v, want ErrIndexCorrupt", err)
			}
			intact(t, dir, ents, "after open")
			rep, err := Recover(dir)
			if err != nil || rep.Restored != len(ents) {
				t.Fatalf("recover: %+v, %v; want %d restored", rep, err, len(ents))
			}
			openCarrying(t, dir, len(ents))
			intact(t, dir, ents, "after recover")
			if _, err := os.Stat(filepath.Join(dir, "index.db.rebuild")); err == nil {
				t.Errorf("index.db.rebuild left after recover")
			}
		})
	}
}

// halfRebuild leaves index.db.rebuild as a recover killed in its
// transaction might have: set up, with one entry of the buffer's.
func halfRebuild(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, recordsDir, recordFiles(t, dir)[0])
	es, _, err := readRecords(p)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db.rebuild"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if err := createBuckets(tx); err != nil {
			return err
		}
		_, _, err := indexEntry(tx, es[0], batchName(p))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// wholeRebuild leaves a complete rebuilt index at index.db.rebuild (a
// recover killed before its rename), by recovering a copy.
func wholeRebuild(t *testing.T, dir string) {
	t.Helper()
	cp := t.TempDir()
	if err := os.CopyFS(cp, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Recover(cp); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(cp, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "index.db.rebuild"), data, 0o600)
}

// Content moved to quarantine/ by an earlier open or recover (as named by
// nothing then) that a record names: recover takes it back, verified,
// rather than report the file lost; a damaged copy there stays there.
func TestRecoverTakesBackFromQuarantine(t *testing.T) {
	dir := t.TempDir()
	ents := carriedBuffer(t, dir, 3, 8<<10)
	q := filepath.Join(dir, QuarantineDir)
	os.MkdirAll(q, 0o700)
	b := &Buffer{dir: dir}
	// The first: a damaged copy under its name, the whole one under a
	// second name, as quarantine keeps both.
	obj0 := b.ObjectPath(ents[0].Hash)
	os.WriteFile(filepath.Join(q, ents[0].Hash), []byte("damaged"), 0o600)
	if err := os.Rename(obj0, filepath.Join(q, ents[0].Hash+".1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b.ObjectPath(ents[1].Hash), filepath.Join(q, ents[1].Hash)); err != nil {
		t.Fatal(err)
	}
	damageIndex(t, dir)
	rep, err := Recover(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored != len(ents) || len(rep.Lost) != 0 {
		t.Fatalf("recover restored %d of %d, lost %v", rep.Restored, len(ents), rep.Lost)
	}
	intact(t, dir, ents, "after recover")
	if data, _ := os.ReadFile(filepath.Join(q, ents[0].Hash)); string(data) != "damaged" {
		t.Errorf("the damaged copy in quarantine is gone")
	}
}
