package carrier_test

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/protocol"
)

// TestPartialMode: while a file is being uploaded its partial is no more
// open than its source (only its owner's read and write added, so that a
// read-only source can be resumed and verified), and it arrives with its
// source's mode exactly.
func TestPartialMode(t *testing.T) {
	for _, h := range sliceHosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e := conformance.NewEnv(t, h.start, "alpha", "beta")
			data := make([]byte, 3<<20+5)
			rand.New(rand.NewSource(1)).Read(data)
			e.Outbox("alpha", "beta", map[string][]byte{"ro.bin": data})
			src := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "ro.bin")
			if err := os.Chmod(src, 0o440); err != nil {
				t.Fatal(err)
			}
			c := e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20})
			conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			var mu sync.Mutex
			seen := map[os.FileMode]bool{}
			carrier.SetSliceWritten(c, func(partial string, _, _ int64) {
				fi, err := os.Stat(filepath.Join(e.Dirs["beta"], filepath.FromSlash(partial)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[fi.Mode().Perm()] = true
				mu.Unlock()
			})
			conformance.MustOK(t, e.Dropoff(c, "beta"))
			if len(seen) != 1 || !seen[0o640] {
				t.Errorf("the partial of a 0440 file had modes %v while written, want only 0640", seen)
			}
			fi, err := os.Stat(filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "ro.bin"))
			if err != nil || fi.Mode().Perm() != 0o440 {
				t.Errorf("arrived: %v, %v; want mode 0440", fi, err)
			}
		})
	}
}
