package faults

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/messor-sync/messor/carrier"
)

// A file that comes out shorter than listed (truncated/rewritten while read;
// found in review)
// is dropped as "changed while read": its partial is deleted, yet its bytes
// stay counted against the limit for the rest of the process.
func TestLimitAccountingAfterChangedFiles(t *testing.T) {
	liar := &hostile{stop: make(chan struct{}), files: map[string][]byte{}}
	t.Cleanup(func() { close(liar.stop) })
	e := newEnv(t)
	e.Start = startHostile(liar)
	e.AddHost("evil", true)
	c := e.carrier(1<<30, carrier.Options{MaxListing: 5000})
	onDisk := func() int64 {
		var n int64
		ents, _ := os.ReadDir(filepath.Join(e.Buf, "partial"))
		for _, d := range ents {
			if i, err := d.Info(); err == nil {
				n += i.Size()
			}
		}
		return n
	}
	for i := 1; i <= 5; i++ {
		c.Pickup(context.Background(), e.Resolve("evil"))
		b := c.Buffer()
		t.Logf("visit %d: Used=%d Stored=%d partial bytes on disk=%d", i, b.Used(), b.Stored(), onDisk())
		if b.Used() != b.Stored()+onDisk() {
			t.Errorf("visit %d: Used()=%d but stored+partials on disk=%d: %d phantom bytes", i, b.Used(), b.Stored()+onDisk(), b.Used()-b.Stored()-onDisk())
		}
	}
}
