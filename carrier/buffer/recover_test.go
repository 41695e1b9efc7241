package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// recoverChildEnv names the buffer that TestRecoverChild recovers: set, the
// test binary is a `messor recover` to be killed.
const recoverChildEnv = "MESSOR_TEST_RECOVER_BUFFER"

// TestRecoverChild is Recover in a process of its own, for
// TestRecoverKilledThenOpen to kill. It does nothing in a normal run.
func TestRecoverChild(t *testing.T) {
	dir := os.Getenv(recoverChildEnv)
	if dir == "" {
		return
	}
	if _, err := Recover(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// carriedBuffer makes a buffer in dir carrying n files of size bytes, each
// committed in a batch of its own, and returns them.
func carriedBuffer(t *testing.T, dir string, n, size int) []Entry {
	t.Helper()
	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r := rand.New(rand.NewSource(int64(n*size + 1)))
	var ents []Entry
	for i := range n {
		data := make([]byte, size)
		r.Read(data)
		ents = append(ents, commitBatch(t, b, map[string][]byte{fmt.Sprintf("big%d.bin", i): data})...)
	}
	return ents
}

// damageIndex writes junk into the middle of dir's index.
func damageIndex(t *testing.T, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "index.db"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(strings.Repeat("junk", 4096)), 16384); err != nil {
		t.Fatal(err)
	}
}

// intact fails the test unless every entry's object and record are there.
func intact(t *testing.T, dir string, ents []Entry, when string) {
	t.Helper()
	recs := recordsOf(t, dir)
	for _, e := range ents {
		if err := verifyObject((&Buffer{dir: dir}).ObjectPath(e.Hash), e.Hash, e.Size); err != nil {
			t.Errorf("%s: object of %s: %v", when, e.Path, err)
		}
		if len(recs[string(e.Key())]) == 0 {
			t.Errorf("%s: record of %s is gone", when, e.Path)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// The reported sequence: files carried, the index damaged, `messor
// recover` killed while it verifies objects (as it was found: at 0.4 s of
// a 1 GiB buffer), then a plain run opens the buffer. Nothing carried may be lost: the open refuses (the damaged index
// is still in place, the rebuilt one never swapped in), and a second
// recover restores every file.
func TestRecoverKilledThenOpen(t *testing.T) {
	dir := t.TempDir()
	ents := carriedBuffer(t, dir, 5, 24<<20)
	damageIndex(t, dir)

	// Kill it when it has read a third of the 120 MiB of objects it
	// verifies.
	p, exited := recoverUntil(t, dir, 40<<20)
	p.Signal(syscall.SIGKILL)
	if err := <-exited; err == nil {
		t.Fatal("recover finished before the kill landed")
	}

	b, err := Open(dir, 1<<40)
	if err == nil {
		got, _ := b.Entries()
		b.Close()
		t.Logf("open after the killed recover succeeded with %d entries", len(got))
	} else if t.Logf("open after the killed recover: %v", err); !errors.Is(err, ErrIndexCorrupt) {
		t.Fatalf("open after the killed recover: %v, want ErrIndexCorrupt", err)
	}
	intact(t, dir, ents, "after open")

	rep, err := Recover(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored != len(ents) || len(rep.Lost) != 0 {
		t.Fatalf("second recover restored %d of %d, lost %v", rep.Restored, len(ents), rep.Lost)
	}
	b, err = Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, _ := b.Entries(); len(got) != len(ents) {
		t.Fatalf("buffer carries %d entries after recovery, want %d", len(got), len(ents))
	}
}

// An index that was never set up (bbolt's empty file: what an older
// messor's recover left when it was killed) beside record files: the open
// refuses as for a missing index, read-only too, and deletes nothing.
func TestOpenUnsetIndexBesideRecords(t *testing.T) {
	dir := t.TempDir()
	ents := carriedBuffer(t, dir, 3, 64<<10)
	index := filepath.Join(dir, "index.db")
	os.Remove(index)
	db, err := bolt.Open(index, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(dir, 1<<40); !errors.Is(err, ErrIndexCorrupt) {
		t.Fatalf("open: %v, want ErrIndexCorrupt", err)
	}
	if _, err := OpenReadOnly(dir); !errors.Is(err, ErrIndexCorrupt) {
		t.Fatalf("read-only open: %v, want ErrIndexCorrupt", err)
	}
	intact(t, dir, ents, "after open")
	rep, err := Recover(dir)
	if err != nil || rep.Restored != len(ents) {
		t.Fatalf("recover: restored %d of %d (%v)", rep.Restored, len(ents), err)
	}
}

// An index set up but empty beside record files (it lost them, or a crash
// came between writing a batch's records and its transaction): the open
// carries the files whose objects verify instead of deleting them, and
// says so; an object nothing names goes to quarantine/, and that is said
// too, with the count and the directory.
func TestOpenAdoptsUnknownRecords(t *testing.T) {
	dir := t.TempDir()
	ents := carriedBuffer(t, dir, 3, 64<<10)
	stray := (&Buffer{dir: dir}).ObjectPath(strings.Repeat("ab", 32))
	if err := os.WriteFile(stray, []byte("named by nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "index.db")
	os.Remove(index)
	db, err := bolt.Open(index, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(createBuckets); err != nil {
		t.Fatal(err)
	}
	db.Close()

	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var logged bytes.Buffer
	b.SetLogger(slog.New(slog.NewTextHandler(&logged, nil)))
	t.Logf("open said:\n%s", logged.String())
	got, _ := b.Entries()
	if len(got) != len(ents) {
		t.Fatalf("open carries %d entries, want the %d its records name", len(got), len(ents))
	}
	intact(t, dir, ents, "after open")
	if b.Stored() != int64(len(ents))*(64<<10) {
		t.Errorf("stored %d bytes, want %d", b.Stored(), len(ents)*(64<<10))
	}
	q := filepath.Join(dir, QuarantineDir)
	if _, err := os.Stat(filepath.Join(q, filepath.Base(stray))); err != nil {
		t.Errorf("object named by nothing not kept in quarantine: %v", err)
	}
	if qs, err := os.ReadDir(q); err != nil || len(qs) != 1 {
		t.Errorf("quarantine holds %d files (%v), want 1 in %s", len(qs), err, q)
	}
	for _, want := range []string{"files=3", "objects=1", "dir=" + q} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the open's report does not say %q", want)
		}
	}
	// They are delivered as any other: the last release removes the files.
	for _, e := range got {
		b.Release(e)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if f := recordFiles(t, dir); len(f) != 0 {
		t.Errorf("record files left after delivery: %v", f)
	}
}

// A crash after the transaction that released a file's last entry, before
// the file was removed (simulated by putting it back): the release marked
// it, so the next open removes it rather than carrying the delivered entry
// again.
func TestReleasedRecordNotAdopted(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ents := commitBatch(t, b, map[string][]byte{"done": []byte("delivered\n")})
	files := recordFiles(t, dir)
	saved, _ := os.ReadFile(filepath.Join(dir, recordsDir, files[0]))
	obj := b.ObjectPath(ents[0].Hash)
	applyBatch(t, b, &op{kind: opRelease, e: ents[0]}) // alone: see TestCrashBeforeRecordRewrite
	os.WriteFile(filepath.Join(dir, recordsDir, files[0]), saved, 0o600)
	os.WriteFile(obj, []byte("delivered\n"), 0o600)
	b.Close()
	b, err = Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, _ := b.Entries(); len(got) != 0 {
		t.Fatalf("a delivered entry is carried again: %v", got)
	}
	if f := recordFiles(t, dir); len(f) != 0 {
		t.Errorf("released record file kept: %v", f)
	}
}
