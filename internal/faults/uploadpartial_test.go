package faults

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/protocol"
)

// TestOddUploadPartials: a partial upload found on the host that is longer
// than the object (its tail someone else's), changed on the host between
// visits, or with a hole in the middle is never delivered as it is: one
// dropoff delivers exactly the object.
func TestOddUploadPartials(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewSource(12))
	big := randBytes(r, 3<<20+17)
	for _, tc := range []struct {
		name    string
		partial func() []byte
	}{
		{"LongerThanObject", func() []byte { return append(bytes.Clone(big), bytes.Repeat([]byte("tail"), 256<<10)...) }},
		{"ChangedOnHost", func() []byte {
			b := bytes.Clone(big[:2<<20])
			copy(b[100:], "changed by someone on the host")
			return b
		}},
		{"HoleInTheMiddle", func() []byte {
			b := bytes.Clone(big[:2<<20])
			clear(b[512<<10 : 576<<10])
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "alpha", "beta")
			e.send("alpha", "beta", map[string][]byte{"big/movie.bin": big})
			c := e.carrier(1<<30, carrier.Options{})
			conformance.MustOK(t, c.Pickup(t.Context(), e.Resolve("alpha")))
			sum := sha256.Sum256(big)
			dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(path.Join(protocol.InboxDir("alpha"), "big")))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			part := filepath.Join(dir, protocol.PartialName("big/movie.bin", hex.EncodeToString(sum[:]), c.Buffer().ID()))
			if err := os.WriteFile(part, tc.partial(), 0o644); err != nil {
				t.Fatal(err)
			}
			conformance.MustOK(t, e.Dropoff(c, "beta"))
			e.world.CheckSettled(t, c.Buffer())
			if got, _ := os.ReadFile(filepath.Join(dir, "movie.bin")); !bytes.Equal(got, big) {
				t.Fatalf("delivered %d bytes, not the object's %d", len(got), len(big))
			}
		})
	}
}
