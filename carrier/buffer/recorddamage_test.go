package buffer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Record files damaged (garbage lines, cut mid-line, an entry named twice)
// beside an index that lost them (set up, empty) or a missing one: the
// open and the recover carry every entry a whole line names whose object
// verifies, count each once, and delete no record or object.
func TestRecordDamageVariants(t *testing.T) {
	damages := map[string]func(data []byte) []byte{
		"garbage lines": func(d []byte) []byte {
			return append(append([]byte("not json\n{\"v\":1}\n\x00\xff\n"), d...), "{]\n"...)
		},
		"cut mid-line": func(d []byte) []byte { return d[:len(d)-20] },
		"entry twice":  func(d []byte) []byte { return append(append([]byte(nil), d...), d...) },
	}
	for name, damage := range damages {
		for _, via := range []string{"open", "recover"} {
			t.Run(name+" "+via, func(t *testing.T) {
				dir := t.TempDir()
				b, err := Open(dir, 1<<30)
				if err != nil {
					t.Fatal(err)
				}
				ents := commitBatch(t, b, map[string][]byte{"a": []byte("one\n"), "b": []byte("two\n"), "c": []byte("three\n")})
				b.Close()
				p := filepath.Join(dir, recordsDir, recordFiles(t, dir)[0])
				data, _ := os.ReadFile(p)
				damaged := damage(data)
				os.WriteFile(p, damaged, 0o600)
				want := 0
				for _, e := range ents {
					if bytes.Contains(damaged, marshalRecord(e)) {
						want++
					}
				}
				if via == "open" {
					emptyIndex(t, dir)
				} else {
					os.Remove(filepath.Join(dir, "index.db"))
					if _, err := Recover(dir); err != nil {
						t.Fatal(err)
					}
				}
				b = openCarrying(t, dir, want)
				got, _ := b.Entries()
				var n string
				b.db.View(func(tx *bolt.Tx) error {
					n = string(tx.Bucket(bucketRecFiles).Get([]byte(filepath.Base(p))))
					return nil
				})
				if n != string(rune('0'+want)) {
					t.Errorf("record file counted %q live entries, want %d", n, want)
				}
				for _, e := range ents {
					if _, err := os.Stat(b.ObjectPath(e.Hash)); err != nil {
						if _, qerr := os.Stat(filepath.Join(dir, QuarantineDir, e.Hash)); qerr != nil {
							t.Errorf("object of %s neither in objects/ nor in quarantine/", e.Path)
						}
					}
				}
				if _, err := os.Stat(p); err != nil {
					t.Errorf("record file: %v", err)
				}
				deliverAll(t, b, got) // and the file goes
			})
		}
	}
}

// quarantine/ holding files under the names of what goes there next (an
// object, a record file): both are kept, the one there untouched.
func TestQuarantineNameTaken(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	data := []byte("named by nothing\n")
	e := testEntry("x", data)
	obj := (&Buffer{dir: dir}).ObjectPath(e.Hash)
	os.WriteFile(obj, data, 0o600)
	torn := filepath.Join(dir, recordsDir, "0000000000000001-0001-abcd"+recordExt)
	os.WriteFile(torn, []byte("{\"v\":1,\"sour"), 0o600)
	q := filepath.Join(dir, QuarantineDir)
	os.MkdirAll(q, 0o700)
	for _, n := range []string{e.Hash, filepath.Base(torn)} {
		os.WriteFile(filepath.Join(q, n), []byte("there first"), 0o600)
	}
	b, err = Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	for _, n := range []string{e.Hash, filepath.Base(torn)} {
		if got, _ := os.ReadFile(filepath.Join(q, n)); string(got) != "there first" {
			t.Errorf("quarantine/%s replaced: %q", n, got)
		}
	}
	if ents, _ := os.ReadDir(q); len(ents) != 4 {
		t.Errorf("quarantine holds %d files, want 4", len(ents))
	}
}
