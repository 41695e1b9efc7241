package faults

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
// visits, with a hole in the middle, or complete (a carrier killed before
// the rename) and changed since is never delivered as it is: one dropoff
// delivers exactly the object, verified whole or in slices against digests
// kept from the pickup.
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
		// Complete, as a carrier killed before the rename leaves it.
		{"Whole", func() []byte { return bytes.Clone(big) }},
		{"WholeChangedOnHost", func() []byte {
			b := bytes.Clone(big)
			b[2<<20+5] ^= 1
			return b
		}},
	} {
		for _, slices := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/slices=%v", tc.name, slices), func(t *testing.T) {
				t.Parallel()
				testOddUploadPartial(t, big, tc.partial(), slices)
			})
		}
	}
}

// testOddUploadPartial puts partial where big is to be delivered and runs
// one dropoff; with slices, a fresh pickup kept the slices' digests
// (slices of 1 MiB), which a resumed upload must not take as proof.
func testOddUploadPartial(t *testing.T, big, partial []byte, slices bool) {
	e := newEnv(t, "alpha", "beta")
	e.send("alpha", "beta", map[string][]byte{"big/movie.bin": big})
	opts := carrier.Options{}
	if slices {
		opts.VerifySlice = 1 << 20
	}
	c := e.carrier(1<<30, opts)
	conformance.MustOK(t, c.Pickup(t.Context(), e.Resolve("alpha")))
	sum := sha256.Sum256(big)
	dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(path.Join(protocol.InboxDir("alpha"), "big")))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, protocol.PartialName("big/movie.bin", hex.EncodeToString(sum[:]), c.Buffer().ID()))
	if err := os.WriteFile(part, partial, 0o644); err != nil {
		t.Fatal(err)
	}
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	e.world.CheckSettled(t, c.Buffer())
	if got, _ := os.ReadFile(filepath.Join(dir, "movie.bin")); !bytes.Equal(got, big) {
		t.Fatalf("delivered %d bytes, not the object's %d", len(got), len(big))
	}
}
