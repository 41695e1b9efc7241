package buffer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// commitBatch commits entries as one group-commit batch (the committer is
// idle between calls, so calling apply here is what its goroutine does).
func commitBatch(t *testing.T, b *Buffer, datas map[string][]byte) []Entry {
	t.Helper()
	var names []string
	for n := range datas {
		names = append(names, n)
	}
	sort.Strings(names)
	var batch []*op
	var ents []Entry
	for i, n := range names {
		e := testEntry(n, datas[n])
		ents = append(ents, e)
		batch = append(batch, &op{kind: opCommit, e: e, o: Origin{e.Source, e.Dest, e.Path, e.Size, int64(100 + i)},
			data: datas[n], done: make(chan opResult, 1)})
	}
	b.apply(batch)
	for _, o := range batch {
		if r := <-o.done; r.err != nil {
			t.Fatalf("commit %s: %v", o.e.Path, r.err)
		}
	}
	return ents
}

// recordFiles lists entries/ and records/.
func recordFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, d := range recordDirs {
		des, err := os.ReadDir(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range des {
			out = append(out, de.Name())
		}
	}
	return out
}

// One record file per batch; a release rewrites it to the live entries,
// the last release removes it; a recovered index brings back exactly the
// undelivered entries.
func TestBatchRecordLifecycle(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	datas := map[string][]byte{}
	for i := range 5 {
		datas[fmt.Sprintf("f%d.txt", i)] = []byte(fmt.Sprintf("content %d\n", i))
	}
	ents := commitBatch(t, b, datas)
	files := recordFiles(t, dir)
	if len(files) != 1 || filepath.Ext(files[0]) != recordExt {
		t.Fatalf("entries/ holds %v, want one %s file", files, recordExt)
	}
	if got := len(recordsOf(t, dir)); got != 5 {
		t.Fatalf("record file names %d entries, want 5", got)
	}

	// Deliver two: the file now names the other three only.
	b.Release(ents[0])
	b.Release(ents[1])
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	recs := recordsOf(t, dir)
	if len(recs) != 3 || len(recordFiles(t, dir)) != 1 {
		t.Fatalf("after two releases: %d entries in %v, want 3 in one file", len(recs), recordFiles(t, dir))
	}
	for _, e := range ents[:2] {
		if recs[string(e.Key())] != nil {
			t.Errorf("delivered %s still has a record", e.Path)
		}
	}

	// The index is lost: recovery restores the three, nothing "lost".
	b.Close()
	os.Rename(filepath.Join(dir, "index.db"), filepath.Join(dir, "index.db.bad"))
	rep, err := Recover(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored != 3 || len(rep.Lost) != 0 || len(rep.Orphans) != 0 {
		t.Fatalf("recovered %d, lost %v, orphans %v; want 3, none, none", rep.Restored, rep.Lost, rep.Orphans)
	}
	b, err = Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	left, _ := b.Entries()
	if len(left) != 3 {
		t.Fatalf("buffer holds %d entries after recovery, want 3", len(left))
	}
	// Releases work on the recovered index, and the last one removes the file.
	for _, e := range left {
		b.Release(e)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if f := recordFiles(t, dir); len(f) != 0 {
		t.Fatalf("entries/ holds %v after every entry was delivered", f)
	}
}

// A buffer written by an older messor has one record file per entry and no
// record links in its index: it opens, its records are kept, released and
// recovered as before.
func TestLegacyRecordFiles(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ents := commitBatch(t, b, map[string][]byte{"old1": []byte("one\n"), "old2": []byte("two\n")})
	// Make it look old: per-entry records, no links.
	for _, f := range recordFiles(t, dir) {
		os.Remove(filepath.Join(dir, "entries", f))
	}
	for _, e := range ents {
		if err := os.WriteFile(b.recordPath(e), marshalRecord(e), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err = b.db.Update(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEntries)
		for _, e := range ents {
			v, _ := json.Marshal(e) // an Entry, no record file named
			if err := eb.Put(e.Key(), v); err != nil {
				return err
			}
		}
		return tx.DeleteBucket(bucketRecFiles)
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()

	b, err = Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if f := recordFiles(t, dir); len(f) != 2 {
		t.Fatalf("opening an older buffer left entries/ with %v, want both records", f)
	}
	// A new batch goes to a batch file beside them.
	commitBatch(t, b, map[string][]byte{"new": []byte("new\n")})
	b.Release(ents[0])
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.recordPath(ents[0])); !os.IsNotExist(err) {
		t.Errorf("released entry's one-entry record still there (%v)", err)
	}
	b.Close()
	os.Remove(filepath.Join(dir, "index.db"))
	rep, err := Recover(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored != 2 || len(rep.Lost) != 0 {
		t.Fatalf("recovered %d, lost %v; want 2 (old2 and new), none lost", rep.Restored, rep.Lost)
	}
}

// A record file the index does not know whose entries cannot be indexed
// (here torn: a crash while it was written, before the index transaction)
// is moved to quarantine/ when the buffer opens, never deleted.
func TestUnindexedRecordFileQuarantined(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	commitBatch(t, b, map[string][]byte{"kept": []byte("kept\n")})
	name := b.newRecordName()
	stray := b.recordFile(name)
	torn := marshalRecord(testEntry("never-indexed", []byte("x")))
	if err := os.WriteFile(stray, torn[:len(torn)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b, err = Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatalf("unindexed record file left among the records (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, QuarantineDir, name)); err != nil {
		t.Fatalf("unindexed record file not kept in quarantine: %v", err)
	}
	if got := len(recordsOf(t, dir)); got != 1 {
		t.Fatalf("%d records left, want the indexed one", got)
	}
}

// applyBatch runs one group-commit batch made of ops as given (the committer
// puts queued ops, i.e. releases and forgets, before the waited-for commits).
func applyBatch(t *testing.T, b *Buffer, ops ...*op) {
	t.Helper()
	for _, o := range ops {
		o.done = make(chan opResult, 1)
	}
	b.apply(ops)
	for _, o := range ops {
		if r := <-o.done; r.err != nil {
			t.Fatalf("op %d on %s: %v", o.kind, o.e.Path, r.err)
		}
	}
}

// Found in review: a release of an indexed entry and a commit of the same
// entry (same source, dest, path, content) in one batch (queued releases
// come first). A first version decided before the transaction that the
// commit needed no record line (indexed already); the release then dropped
// the record, the commit indexed the entry again without one, and a later
// Recover lost it silently (its object moved to orphans/).
func TestReleaseAndRecommitInOneBatch(t *testing.T) {
	for _, withSibling := range []bool{false, true} {
		name := "alone"
		if withSibling {
			name = "withSibling"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			b, err := Open(dir, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			datas := map[string][]byte{"k.txt": []byte("carried\n")}
			if withSibling {
				datas["sib.txt"] = []byte("sibling\n")
			}
			ents := commitBatch(t, b, datas)
			var e Entry
			for _, x := range ents {
				if x.Path == "k.txt" {
					e = x
				}
			}
			if !hasRecord(t, dir, e) {
				t.Fatal("setup: no record")
			}
			data := datas["k.txt"]
			applyBatch(t, b,
				&op{kind: opRelease, e: e},
				&op{kind: opCommit, e: e, o: Origin{e.Source, e.Dest, e.Path, e.Size, 200}, data: data},
			)
			left, _ := b.Entries()
			indexed := false
			for _, x := range left {
				if x.Path == e.Path {
					indexed = true
				}
			}
			if !indexed {
				t.Fatal("entry committed again is not indexed")
			}
			if !hasRecord(t, dir, e) {
				b.Close()
				os.Rename(filepath.Join(dir, "index.db"), filepath.Join(dir, "index.db.bad"))
				rep, rerr := Recover(dir)
				t.Errorf("entry indexed without a record; Recover then: restored=%d lost=%v orphans=%v err=%v",
					rep.Restored, rep.Lost, rep.Orphans, rerr)
				return
			}
			b.Close()
		})
	}
}

// The same entry committed twice in one batch: one record survives, and
// the release of the entry removes the file.
func TestSameEntryTwiceInOneBatch(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data := []byte("dup\n")
	e := testEntry("d.txt", data)
	applyBatch(t, b,
		&op{kind: opCommit, e: e, o: Origin{e.Source, e.Dest, e.Path, e.Size, 1}, data: data},
		&op{kind: opCommit, e: e, o: Origin{e.Source, e.Dest, e.Path, e.Size, 2}, data: data},
	)
	recs := recordsOf(t, dir)
	t.Logf("files=%v lines for key=%d", recordFiles(t, dir), len(recs[string(e.Key())]))
	b.Release(e)
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if f := recordFiles(t, dir); len(f) != 0 {
		t.Errorf("after release: %v", f)
	}
}

// Found in review: a crash between a release's transaction and the rewrite
// of its record file (simulated by putting the old file back) left the
// delivered entry's line in the file for as long as the file had a live
// entry, and Recover brought the delivered entry back. The file is
// marked in the transaction and rewritten when the buffer is next opened.
func TestCrashBeforeRecordRewrite(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ents := commitBatch(t, b, map[string][]byte{"a": []byte("same\n"), "b": []byte("same\n")})
	// Simulate "crash after the transaction, before the rewrite": make
	// the rewrite impossible by putting the file back afterwards.
	files := recordFiles(t, dir)
	saved, _ := os.ReadFile(filepath.Join(dir, recordsDir, files[0]))
	// The release alone in a batch: no later transaction clears the mark
	// (through the committer, a flush could come in a batch of its own
	// after the rewrite and clear it, which no crash can undo).
	applyBatch(t, b, &op{kind: opRelease, e: ents[0]})
	os.WriteFile(filepath.Join(dir, recordsDir, files[0]), saved, 0o600)
	b.Close()
	b, err = Open(dir, 1<<30) // rewrites the marked file
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	os.Rename(filepath.Join(dir, "index.db"), filepath.Join(dir, "index.db.bad"))
	rep, err := Recover(dir)
	t.Logf("restored=%d (1 live, 1 delivered) err=%v", rep.Restored, err)
	if rep.Restored != 1 {
		t.Errorf("delivered entry %s resurrected by Recover: restored %d", ents[0].Path, rep.Restored)
	}
}

// Found in review: a record file marked for rewriting that could not be
// rewritten at open (a full disk) made the buffer impossible to open, so
// nothing could be delivered to free space. It stays marked instead.
func TestDirtyRewriteFailureDoesNotBlockOpen(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ents := commitBatch(t, b, map[string][]byte{"a": []byte("a\n"), "b": []byte("b\n")})
	files := recordFiles(t, dir)
	tmp := filepath.Join(dir, recordsDir, files[0]+".tmp")
	os.MkdirAll(filepath.Join(tmp, "x"), 0o700) // non-empty: check's Remove cannot drop it
	b.Release(ents[0])
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b, err = Open(dir, 1<<30)
	if err != nil {
		t.Fatalf("buffer with a live entry cannot be opened: %v", err)
	}
	b.Close()
}
