package buffer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func testEntry(path string, data []byte) Entry {
	sum := sha256.Sum256(data)
	return Entry{Source: "alpha", Dest: "beta", Path: path, Hash: hex.EncodeToString(sum[:]),
		Size: int64(len(data)), MTime: time.Unix(1700000000, 0).UTC(), PickedAt: time.Now().UTC()}
}

// Found in review. A file already carried (entry K indexed, record written) is picked up
// again with the same content (touched in the outbox, or after
// Recover, whose doc says exactly that happens), and that second
// commit fails at the index (ENOSPC growing index.db, EIO on its fsync; here
// simulated by closing the db). The cleanup in apply removes recordPath(e),
// which is the record of the entry that stays indexed.
func TestFailedRecommitKeepsIndexedRecord(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("carried once\n")
	e := testEntry("a.txt", data)
	if _, err := b.CommitData(e, Origin{"alpha", "beta", "a.txt", e.Size, 100}, data, e.Size); err != nil {
		t.Fatal(err)
	}
	if !hasRecord(t, dir, e) {
		t.Fatal("no record written for the committed entry")
	}
	b.db.Close() // the next index transaction fails
	e2 := e
	e2.PickedAt = e.PickedAt.Add(time.Hour)
	if _, err := b.CommitData(e2, Origin{"alpha", "beta", "a.txt", e.Size, 200}, data, e.Size); err == nil {
		t.Fatal("commit on a closed index succeeded")
	}
	b.Close()

	b, err = Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := b.Entries()
	b.Close()
	if len(ents) != 1 {
		t.Fatalf("index holds %d entries, want 1", len(ents))
	}
	if !hasRecord(t, dir, e) {
		// Show what that costs: the index is lost later, recover runs.
		os.Rename(filepath.Join(dir, "index.db"), filepath.Join(dir, "index.db.bad"))
		rep, rerr := Recover(dir)
		t.Fatalf("entry still indexed but its record is gone; Recover then: restored=%d lost=%v orphans=%v err=%v",
			rep.Restored, rep.Lost, rep.Orphans, rerr)
	}
}

// hasRecord reports whether a record file in dir's entries/ holds e.
func hasRecord(t *testing.T, dir string, e Entry) bool {
	t.Helper()
	return len(recordsOf(t, dir)[string(e.Key())]) > 0
}

// recordsOf reads every record file in dir's entries/ and records/: entry
// key -> the files holding it.
func recordsOf(t *testing.T, dir string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, d := range recordDirs {
		des, err := os.ReadDir(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range des {
			if !isRecordFile(de.Name()) {
				continue
			}
			ents, bad, err := readRecords(filepath.Join(dir, d, de.Name()))
			if err != nil || len(bad) > 0 {
				t.Fatalf("record file %s: %v %v", de.Name(), err, bad)
			}
			for _, e := range ents {
				out[string(e.Key())] = append(out[string(e.Key())], de.Name())
			}
		}
	}
	return out
}

// Found in review: flush must return only after every op queued before it is applied. With
// other commits in flight, a release queued after the committer took the
// pending list but before the drain loop received the flush is left behind.
func TestFlushWaitsForQueuedRelease(t *testing.T) {
	dir := t.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir, _ = os.MkdirTemp("/dev/shm", "messor-flush")
		defer os.RemoveAll(dir)
	}
	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				data := []byte(fmt.Sprintf("bg %d %d", i, j))
				e := testEntry(fmt.Sprintf("bg/%d/%d", i, j), data)
				b.CommitData(e, Origin{"alpha", "beta", e.Path, e.Size, 1}, data, 0)
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	misses := 0
	const iters = 500
	for k := 0; k < iters; k++ {
		data := []byte(fmt.Sprintf("fg %d", k))
		e := testEntry(fmt.Sprintf("fg/%d", k), data)
		if _, err := b.CommitData(e, Origin{"alpha", "beta", e.Path, e.Size, 1}, data, 0); err != nil {
			t.Fatal(err)
		}
		b.Release(e)
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
		var still bool
		b.db.View(func(tx *bolt.Tx) error {
			still = tx.Bucket(bucketEntries).Get(e.Key()) != nil
			return nil
		})
		if still {
			misses++
		}
	}
	if misses > 0 {
		t.Fatalf("%d of %d flushes returned before the release queued before them was applied", misses, iters)
	}
}

// A "carried" record is trusted only while the buffer holds that version,
// or when its outbox file could not be removed: a stale record (its forget
// lost in a crash) never makes a later visit remove a file uncarried.
func TestCarriedRecords(t *testing.T) {
	b, err := Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data := []byte("v1\n")
	e := testEntry("a.txt", data)
	o := Origin{"alpha", "beta", "a.txt", e.Size, e.MTime.Unix()}
	if _, err := b.CommitData(e, o, data, e.Size); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Carried([]Origin{o}); !ok[0] {
		t.Fatal("a held version is not carried")
	}
	b.Release(e) // delivered; the forget was lost (never queued)
	b.Flush()
	if ok, _ := b.Carried([]Origin{o}); ok[0] {
		t.Fatal("a stale record counts as carried")
	}
	if _, err := b.CommitData(e, o, data, e.Size); err != nil {
		t.Fatal(err)
	}
	b.Release(e)
	b.Flush()
	if err := b.RemoveFailed(o); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Carried([]Origin{o}); !ok[0] {
		t.Fatal("a file we could not remove is carried again")
	}
}
