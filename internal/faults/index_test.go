package faults

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/carrier"
)

// TestCorruptIndex overwrites the buffer's index with junk, and then
// deletes it: opening the buffer fails with ErrIndexCorrupt and a message
// that says so (nothing is deleted meanwhile), the CLI reports it, and
// RecoverBuffer rebuilds the index so that every carried file is
// delivered.
func TestCorruptIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(5))
	files := smallTree(r, "idx", 20, 8<<10)
	files["idx/big.bin"] = randBytes(r, 2<<20)
	files["idx/dup1"] = []byte("same content")
	files["idx/dup2"] = []byte("same content")
	e.send("alpha", "beta", files)
	ctx := context.Background()
	c := e.carrier(1<<30, carrier.Options{})
	if rs := c.Pickup(ctx, e.Resolve("alpha")); reportsErr(rs) != nil {
		t.Fatal(reportsErr(rs))
	}
	c.Buffer().Close()
	index := filepath.Join(e.Buf, "index.db")

	for _, damage := range []struct {
		name string
		do   func() error
	}{
		{"junk", func() error { return os.WriteFile(index, []byte(strings.Repeat("not a bbolt file\n", 4096)), 0o600) }},
		{"junk in the middle", func() error {
			f, err := os.OpenFile(index, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(randBytes(r, 8192), 16384)
			return err
		}},
		{"missing", func() error { return os.Remove(index) }},
	} {
		if err := damage.do(); err != nil {
			t.Fatalf("%s: %v", damage.name, err)
		}
		_, err := carrier.OpenBuffer(e.Buf, 1<<30)
		if !errors.Is(err, carrier.ErrIndexCorrupt) {
			t.Fatalf("%s: open: %v, want ErrIndexCorrupt", damage.name, err)
		}
		if !strings.Contains(err.Error(), e.Buf) || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("%s: message %q does not name the buffer and the damage", damage.name, err)
		}
		t.Logf("%s: %v", damage.name, err)
		code, out := e.runCLI(t, "dropoff")
		if code != 1 || !strings.Contains(out, "corrupt") {
			t.Errorf("%s: messor dropoff: exit %d, want 1 and a message about the corrupt index:\n%s", damage.name, code, out)
		}
		rep, err := carrier.RecoverBuffer(e.Buf)
		if err != nil {
			t.Fatalf("%s: recover: %v", damage.name, err)
		}
		t.Logf("%s: recovered %d entries, lost %v, orphans %v, damaged index moved to %s", damage.name, rep.Restored, rep.Lost, rep.Orphans, rep.MovedAside)
		if rep.Restored != len(files) || len(rep.Lost)+len(rep.Orphans) != 0 {
			t.Fatalf("%s: recovered %d of %d entries", damage.name, rep.Restored, len(files))
		}
		e.world.Check(t, nil)
	}
	c = e.carrier(1<<30, carrier.Options{})
	if rs, _ := c.Dropoff(ctx, e.Resolve("beta")); reportsErr(rs) != nil {
		t.Fatal(reportsErr(rs))
	}
	e.world.CheckSettled(t, c.Buffer())
}
