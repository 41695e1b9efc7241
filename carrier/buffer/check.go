package buffer

// What Open reconciles before it hands out a buffer: an index that does
// not decode, record files left marked by a release, records the index
// does not know, objects counted wrong or named by nothing.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// verifyIndex checks the index's pages and that every entry and object
// record decodes. bbolt panics on some damaged pages; that is corruption too.
func (b *Buffer) verifyIndex() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("index damaged: %v", p)
		}
	}()
	return b.db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drain it: the checker runs until done
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return first
		}
		for _, n := range [][]byte{bucketEntries, bucketObjects} {
			bk := tx.Bucket(n)
			if bk == nil {
				continue
			}
			err := bk.ForEach(func(k, v []byte) error {
				var x any
				if string(n) == string(bucketEntries) {
					x = &Entry{}
				} else {
					x = &objectRec{}
				}
				if err := json.Unmarshal(v, x); err != nil {
					return fmt.Errorf("%s %q: %w", n, k, err)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// sumStored adds up the committed objects.
func (b *Buffer) sumStored() error {
	return b.db.View(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketObjects)
		if ob == nil {
			return nil
		}
		return ob.ForEach(func(k, v []byte) error {
			var r objectRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("buffer %s: object %s: %w: %w", b.dir, k, ErrIndexCorrupt, err)
			}
			b.stored += r.Size
			return nil
		})
	})
}

// check reconciles the index with the files when the buffer opens. It
// never deletes an object or a record file that a record names, nor a
// record file the index does not mark as released: record files a release
// left naming delivered entries (marked in its transaction) are rewritten;
// record files the index does not know (a crash between writing one and
// the index transaction, or an index that lost them) have their entries
// indexed again where the object verifies; objects that are then still
// unknown are moved to quarantine/ and reported. Partial bytes are counted
// against the limit.
func (b *Buffer) check() error {
	if err := b.rewriteDirty(); err != nil {
		return err
	}
	if err := b.adoptRecords(); err != nil {
		return err
	}
	if err := b.recountObjects(); err != nil {
		return err
	}
	known := map[string]bool{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketObjects).ForEach(func(k, _ []byte) error {
			known[string(k)] = true
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("buffer %s: %w: %w", b.dir, ErrIndexCorrupt, err)
	}
	moved, err := b.quarantineObjects(func(hash string) bool { return known[hash] })
	if len(moved) > 0 {
		b.note("moved content that neither the index nor a record names to quarantine (kept, not deleted)",
			"objects", len(moved), "dir", filepath.Join(b.dir, QuarantineDir))
	}
	if err != nil {
		return fmt.Errorf("buffer %s: %w", b.dir, err)
	}
	if err := b.sumStored(); err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(b.dir, "partial"))
	if err != nil {
		return fmt.Errorf("buffer %s: %w", b.dir, err)
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			b.partials += info.Size()
		}
	}
	return nil
}

// rewriteDirty rewrites the record files that releases marked (a crash
// before their rewrite), and unmarks them.
func (b *Buffer) rewriteDirty() error {
	dirty, err := b.dirtyRecords()
	if err != nil || len(dirty) == 0 {
		return err
	}
	var done []string
	for name := range dirty {
		// One that cannot be rewritten now (a full disk) keeps its
		// mark: the buffer still opens, and delivering frees space.
		if err := b.rewriteRecords(name); err == nil || errors.Is(err, fs.ErrNotExist) {
			done = append(done, name)
		}
	}
	err = b.db.Update(func(tx *bolt.Tx) error {
		for _, name := range done {
			if err := tx.Bucket(bucketRecDirty).Delete([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer %s: %w: %w", b.dir, ErrIndexCorrupt, err)
	}
	return nil
}

// wantedRecords returns the names of the record files the index links
// entries to.
func (b *Buffer) wantedRecords() (map[string]bool, error) {
	want := map[string]bool{}
	err := b.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketRecFiles).ForEach(func(k, _ []byte) error {
			want[string(k)] = true
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			var se storedEntry
			if err := json.Unmarshal(v, &se); err != nil {
				return err
			}
			if se.Rec != "" {
				want[se.Rec] = true
			} else {
				want[filepath.Base(b.recordPath(se.Entry))] = true
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w: %w", b.dir, ErrIndexCorrupt, err)
	}
	return want, nil
}

// adoptRecords indexes the entries of record files that the index does
// not list and whose objects verify: they were carried (their objects and
// records were made durable before the index transaction that a crash cut
// off, or the index lost them). That covers whole files the index does not
// know and, in files it knows and has not marked for a rewrite (whose
// lines are then all live), lines whose entry it lost: a later rewrite
// would drop their records. A file the index does not know none of whose
// entries can be indexed goes to quarantine/.
func (b *Buffer) adoptRecords() error {
	want, err := b.wantedRecords()
	if err != nil {
		return err
	}
	dirty, err := b.dirtyRecords()
	if err != nil {
		return err
	}
	for _, d := range recordDirs {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o700); err != nil {
			return fmt.Errorf("buffer %s: %w", b.dir, err)
		}
	}
	recs, err := b.recordFiles()
	if err != nil {
		return fmt.Errorf("buffer %s: %w", b.dir, err)
	}
	// A rewrite's temporary file: the file it rewrites is whole.
	tmps, _ := filepath.Glob(filepath.Join(b.dir, recordsDir, "*"+recordExt+".tmp"))
	for _, p := range tmps {
		os.Remove(p)
	}
	verified := map[string]bool{}
	adopted, moved := 0, 0
	for _, p := range recs {
		known := want[filepath.Base(p)]
		if known && dirty[filepath.Base(p)] {
			continue
		}
		n, err := b.adoptRecordFile(p, verified)
		if err != nil {
			return fmt.Errorf("buffer %s: %w: %w", b.dir, ErrIndexCorrupt, err)
		}
		adopted += n
		if n == 0 && !known {
			if _, err := b.quarantine(p); err != nil {
				return fmt.Errorf("buffer %s: %w", b.dir, err)
			}
			moved++
		}
	}
	if adopted > 0 {
		b.note("found carried files the index did not list (a crash before the index recorded them, or an index that lost them): carrying them", "files", adopted)
	}
	if moved > 0 {
		b.note("moved record files naming nothing that could be carried to quarantine (kept, not deleted)", "files", moved, "dir", filepath.Join(b.dir, QuarantineDir))
	}
	return nil
}

// adoptRecordFile indexes the entries of the record file p that the index
// does not list and whose objects verify, and returns how many.
func (b *Buffer) adoptRecordFile(p string, verified map[string]bool) (int, error) {
	es, _, _ := readRecords(p) // lines that do not parse name nothing to index
	var missing []Entry
	b.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEntries)
		for _, e := range es {
			if eb.Get(e.Key()) == nil {
				missing = append(missing, e)
			}
		}
		return nil
	})
	if len(missing) == 0 {
		return 0, nil
	}
	ents, _ := b.verifiedEntries(missing, verified, false)
	n := 0
	err := b.db.Update(func(tx *bolt.Tx) error {
		n = 0
		for _, e := range ents {
			added, _, err := indexEntry(tx, e, batchName(p))
			if err != nil {
				return err
			}
			if added {
				n++
			}
		}
		for _, e := range ents {
			if err := settleReaddress(tx, e); err != nil {
				return err
			}
		}
		if name := batchName(p); name != "" {
			return recount(tx, name, es)
		}
		return nil
	})
	return n, err
}

// recount sets the live entries of the batch record file name, whose
// entries are es, to those the index links to it (adopting lost lines must
// not count twice the ones it kept).
func recount(tx *bolt.Tx, name string, es []Entry) error {
	eb, seen, n := tx.Bucket(bucketEntries), map[string]bool{}, 0
	for _, e := range es {
		if v := eb.Get(e.Key()); v != nil && recOf(v) == name && !seen[string(e.Key())] {
			seen[string(e.Key())] = true
			n++
		}
	}
	fb := tx.Bucket(bucketRecFiles)
	if n == 0 {
		return fb.Delete([]byte(name))
	}
	return fb.Put([]byte(name), []byte(strconv.Itoa(n)))
}

// dirtyRecords returns the names of the record files marked for a
// rewrite.
func (b *Buffer) dirtyRecords() (map[string]bool, error) {
	dirty := map[string]bool{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRecDirty).ForEach(func(k, _ []byte) error {
			dirty[string(k)] = true
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w: %w", b.dir, ErrIndexCorrupt, err)
	}
	return dirty, nil
}

// recountObjects sets each object's record to the uses and size its
// entries give it where they differ (an index that lost object records):
// an object not counted would be moved to quarantine under its entries,
// or removed when the first of them is released.
func (b *Buffer) recountObjects() error {
	want := map[string]objectRec{}
	var fix []string
	err := b.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			want[e.Hash] = objectRec{Size: e.Size, Refs: want[e.Hash].Refs + 1}
			return nil
		})
		ob := tx.Bucket(bucketObjects)
		for h, w := range want {
			var r objectRec
			if v := ob.Get([]byte(h)); v == nil || json.Unmarshal(v, &r) != nil || r != w {
				fix = append(fix, h)
			}
		}
		return err
	})
	if err == nil && len(fix) > 0 {
		err = b.db.Update(func(tx *bolt.Tx) error {
			for _, h := range fix {
				v, _ := json.Marshal(want[h])
				if err := tx.Bucket(bucketObjects).Put([]byte(h), v); err != nil {
					return err
				}
			}
			return nil
		})
		b.note("counted the uses of objects again from the index's entries (its object records did not match them)", "objects", len(fix))
	}
	if err != nil {
		return fmt.Errorf("buffer %s: %w: %w", b.dir, ErrIndexCorrupt, err)
	}
	return nil
}
