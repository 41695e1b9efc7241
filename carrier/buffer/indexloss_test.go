package buffer

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// An index that opens whole but lost some entries (and their objects'
// counts) of a record file it still knows: the open carries them again
// rather than move their objects to quarantine, and a later release of the
// file's other entries never rewrites their records away.
func TestOpenAdoptsEntriesIndexLost(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ents := commitBatch(t, b, map[string][]byte{"a.txt": []byte("lost by the index\n"), "b.txt": []byte("still indexed\n")})
	b.Close()
	lost, kept := ents[0], ents[1]
	editIndex(t, dir, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketEntries).Delete(lost.Key()); err != nil {
			return err
		}
		return tx.Bucket(bucketObjects).Delete([]byte(lost.Hash))
	})

	b = openCarrying(t, dir, 2)
	var n string
	b.db.View(func(tx *bolt.Tx) error {
		n = string(tx.Bucket(bucketRecFiles).Get([]byte(recordFiles(t, dir)[0])))
		return nil
	})
	if n != "2" {
		t.Errorf("record file counted %q live entries, want 2", n)
	}
	b.Release(kept)
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	intact(t, dir, []Entry{lost}, "after the other entry's release")
	deliverAll(t, b, []Entry{lost})
	if _, err := os.Stat(filepath.Join(dir, QuarantineDir)); err == nil {
		ents, _ := os.ReadDir(filepath.Join(dir, QuarantineDir))
		for _, e := range ents {
			t.Errorf("quarantined: %s", e.Name())
		}
	}
}

// An index that opens whole but lost the object record of content two
// entries share: the open counts the object's uses again from the entries
// rather than move it to quarantine, and delivering one entry leaves the
// object for the other.
func TestOpenRecountsObjectsIndexLost(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	same := []byte("the same content twice\n")
	ents := commitBatch(t, b, map[string][]byte{"one.txt": same, "two.txt": same})
	b.Close()
	editIndex(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketObjects).Delete([]byte(ents[0].Hash)) })

	b = openCarrying(t, dir, 2)
	intact(t, dir, ents, "after open")
	if b.Stored() != int64(len(same)) {
		t.Errorf("stored %d bytes, want %d", b.Stored(), len(same))
	}
	b.Release(ents[0])
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	intact(t, dir, ents[1:], "after the other entry's release")
}
