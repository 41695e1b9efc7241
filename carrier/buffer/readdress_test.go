package buffer

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// A readdress killed at each point leaves each file carried for the old
// destination or for the new one, never for both: killed once its records
// were written but before its transaction (the next open adopts them and
// releases the old entries), or with the index lost before the old record
// file was rewritten (a recover).
func TestReaddressKilled(t *testing.T) {
	pre := filepath.Join(t.TempDir(), "buf")
	ents := carriedBuffer(t, pre, 2, 100)
	post := copyBuffer(t, pre)
	b := openCarrying(t, post, 2)
	if err := b.Readdress(ents, "home"); err != nil {
		t.Fatal(err)
	}
	b.Close()
	carriedFor(t, post, "home", 2, "readdressed")
	oldRecs, newRecs := recordFiles(t, pre), recordFiles(t, post)

	// Killed before the transaction: the old index, old records and the
	// new record file.
	cut := copyBuffer(t, pre)
	for _, n := range newRecs {
		if !slices.Contains(oldRecs, n) {
			copyFile(t, filepath.Join(post, recordsDir, n), filepath.Join(cut, recordsDir, n))
		}
	}
	carriedFor(t, cut, "home", 2, "open after a kill before the transaction")
	carriedFor(t, cut, "home", 2, "second open")
	if _, err := Recover(cut); err != nil {
		t.Fatal(err)
	}
	carriedFor(t, cut, "home", 2, "recover after a kill before the transaction")

	// The index lost after the transaction, before the old record file was
	// rewritten: every record file, old and new, and no index.
	lost := copyBuffer(t, post)
	for _, n := range oldRecs {
		copyFile(t, filepath.Join(pre, recordsDir, n), filepath.Join(lost, recordsDir, n))
	}
	os.Remove(filepath.Join(lost, "index.db"))
	if _, err := Recover(lost); err != nil {
		t.Fatal(err)
	}
	carriedFor(t, lost, "home", 2, "recover with the old records")
}

// carriedFor fails unless the buffer in dir opens and carries n entries,
// all for dest.
func carriedFor(t *testing.T, dir, dest string, n int, when string) {
	t.Helper()
	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	defer b.Close()
	ents, err := b.Entries()
	if err != nil || len(ents) != n {
		t.Fatalf("%s: %d entries (%v), want %d for %s: %+v", when, len(ents), err, n, dest, ents)
	}
	for _, e := range ents {
		if e.Dest != dest {
			t.Fatalf("%s: %s carried for %s, want %s", when, e.Path, e.Dest, dest)
		}
	}
}

func copyBuffer(t *testing.T, dir string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "buf")
	if out, err := exec.Command("cp", "-a", dir, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return to
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A readdress whose new entry cannot be committed (its object is gone)
// leaves the old entry carried.
func TestReaddressFailedKeepsOld(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "buf")
	ents := carriedBuffer(t, dir, 1, 100)
	b := openCarrying(t, dir, 1)
	if err := os.Remove(b.ObjectPath(ents[0].Hash)); err != nil {
		t.Fatal(err)
	}
	if err := b.Readdress(ents, "home"); err == nil {
		t.Error("readdress without its object succeeded")
	}
	if got, _ := b.Entries(); len(got) != 1 || got[0].Dest != ents[0].Dest {
		t.Errorf("after a failed readdress the buffer carries %+v", got)
	}
}
