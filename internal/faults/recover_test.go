package faults

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
)

// partialBytes is what the buffer's partial downloads hold.
func partialBytes(buf string) int64 {
	var n int64
	ents, _ := os.ReadDir(filepath.Join(buf, "partial"))
	for _, d := range ents {
		if i, err := d.Info(); err == nil {
			n += i.Size()
		}
	}
	return n
}

// A pickup interrupted when the partial holds most of the limit resumes
// under that limit: the partial's own bytes count toward its own file, not
// against the room it needs (a 400 MB file cut at 250 MB under the default
// 500 MiB limit waited "over the buffer limit" for ever).
func TestInterruptedPickupResumesUnderLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(6))
	const size, limit = 8 << 20, 10 << 20
	e.send("alpha", "beta", map[string][]byte{"big/film.bin": randBytes(r, size)})
	p := e.proxy("alpha")
	p.SetRate(4 << 20)

	c := e.carrier(limit, carrier.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []*carrier.HostReport, 1)
	go func() { done <- c.Pickup(ctx, e.Resolve("alpha")) }()
	for partialBytes(e.Buf) < 6<<20 {
		select {
		case <-done:
			t.Fatal("pickup ended before it could be interrupted")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-done
	c.Buffer().Close()
	have := partialBytes(e.Buf)
	t.Logf("interrupted with %d of %d bytes in the partial, limit %d", have, size, limit)
	if have <= limit-size {
		t.Fatalf("partial holds %d bytes: too few to show anything", have)
	}
	e.world.Check(t, nil)

	p.SetRate(0)
	c = e.carrier(limit, carrier.Options{})
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	if err := reportsErr(rs); err != nil {
		t.Fatal(err)
	}
	if rs[0].Files != 1 {
		t.Fatalf("resumed pickup carried %d files, want 1: %s %v", rs[0].Files, rs[0].Summary(), rs[0].Waiting)
	}
	if used := c.Buffer().Used(); used > limit {
		t.Errorf("buffer uses %d bytes, over its limit %d", used, limit)
	}
	if rs, _ := c.Dropoff(context.Background(), e.Resolve("beta")); reportsErr(rs) != nil {
		t.Fatal(reportsErr(rs))
	}
	e.world.CheckSettled(t, c.Buffer())
}
