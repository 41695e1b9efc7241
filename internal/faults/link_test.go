package faults

import (
	"context"
	"errors"
	"math/rand"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
)

// TestFlakyWiFi carries a 64 MiB file and a tree of small files over links
// cut every 2 MiB, by repeated runs, and checks that resume resumes: the
// bytes over each link stay within 1.25x of the payload.
func TestFlakyWiFi(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(1))
	files := smallTree(r, "tree", 150, 8<<10)
	files["big/video.bin"] = randBytes(r, 64<<20)
	e.send("alpha", "beta", files)
	total := payload(files)
	c := e.carrier(1<<30, carrier.Options{})
	ctx := context.Background()

	const cut = 2 << 20
	const maxRounds = 120
	for _, leg := range []struct {
		verb string
		host string
		run  func() []*carrier.HostReport
		done func() bool
	}{
		{"pickup", "alpha",
			func() []*carrier.HostReport { return c.Pickup(ctx, e.Resolve("alpha")) },
			func() bool { return len(e.OutboxFiles("alpha")) == 0 }},
		{"dropoff", "beta",
			func() []*carrier.HostReport { rs, _ := c.Dropoff(ctx, e.Resolve("beta")); return rs },
			func() bool { st, _ := carrier.ReadStatus(c.Buffer()); return st.Files == 0 }},
	} {
		p := e.proxy(leg.host)
		p.CutAfter(cut)
		rounds := 0
		for !leg.done() {
			rounds++
			if rounds > maxRounds {
				t.Fatalf("%s: not done after %d rounds", leg.verb, maxRounds)
			}
			before := p.BytesUp() + p.BytesDown()
			rs := leg.run()
			if err := reportsErr(rs); err != nil && rounds%10 == 1 {
				t.Logf("%s round %d: %.200v", leg.verb, rounds, err)
			}
			// A report's bytes less those resumed are what it says
			// crossed the link in this round: never more than did.
			var moved int64
			for _, r := range rs {
				moved += r.Bytes - r.Resumed
			}
			if wire := p.BytesUp() + p.BytesDown() - before; moved > wire {
				t.Errorf("%s round %d: the reports count %d bytes moved now, %d crossed the link: %s", leg.verb, rounds, moved, wire, rs[0].Summary())
			}
			e.world.Check(t, c.Buffer())
		}
		wire := p.BytesUp() + p.BytesDown()
		ratio := float64(wire) / float64(total)
		t.Logf("%s: %d rounds over %d connections; %d bytes over the link (up %d, down %d) for %d bytes of payload: %.3fx",
			leg.verb, rounds, p.Conns(), wire, p.BytesUp(), p.BytesDown(), total, ratio)
		if ratio > 1.25 {
			t.Errorf("%s: %.3fx the payload crossed the link; resume wastes too much", leg.verb, ratio)
		}
	}
	e.world.CheckSettled(t, c.Buffer())
}

// TestStalledLink stalls the link in the middle of a pickup and of a
// dropoff: each run gives up on its own (the idle watch) instead of
// hanging, keeps what it moved, and the next run resumes from there.
func TestStalledLink(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(2))
	const size = 6 << 20
	files := map[string][]byte{"stall/big.bin": randBytes(r, size), "stall/small.txt": []byte("small\n")}
	e.send("alpha", "beta", files)
	// Short, for a quick test, but not so short that a loaded machine's
	// slow replies before the stall look like one (at 1 s, load 40 did).
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: 3 * time.Second})
	ctx := context.Background()

	for _, leg := range []struct {
		verb, host string
		run        func() []*carrier.HostReport
	}{
		{"pickup", "alpha", func() []*carrier.HostReport { return c.Pickup(ctx, e.Resolve("alpha")) }},
		{"dropoff", "beta", func() []*carrier.HostReport { rs, _ := c.Dropoff(ctx, e.Resolve("beta")); return rs }},
	} {
		p := e.proxy(leg.host)
		p.SetRate(8 << 20)
		var rs []*carrier.HostReport
		done := make(chan struct{})
		go func() { defer close(done); rs = leg.run() }()
		// Stall once a third of the file has crossed.
		for p.BytesUp()+p.BytesDown() < size/3 {
			select {
			case <-done:
				t.Fatalf("%s finished before the stall: %v", leg.verb, reportsErr(rs))
			case <-time.After(5 * time.Millisecond):
			}
		}
		p.Stall(true)
		stalledAt := p.BytesUp() + p.BytesDown()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s hangs on a stalled link", leg.verb)
		}
		if len(rs) != 1 || !errors.Is(rs[0].Err, carrier.ErrStalled) {
			t.Fatalf("%s: want ErrStalled, got %v", leg.verb, rs)
		}
		t.Logf("%s: %s", leg.verb, rs[0].Err)
		e.world.Check(t, c.Buffer())
		p.Stall(false)
		p.CutAll() // the stalled connection is dead to the carrier already
		p.SetRate(0)
		before := p.BytesUp() + p.BytesDown()
		rs = leg.run()
		if err := reportsErr(rs); err != nil {
			t.Fatalf("%s after the stall: %v", leg.verb, err)
		}
		again := p.BytesUp() + p.BytesDown() - before
		t.Logf("%s: %d bytes crossed before the stall, %d after it, for %d bytes", leg.verb, stalledAt, again, size)
		if again > size-size/4 {
			t.Errorf("%s: the run after the stall moved %d bytes of %d: it did not resume", leg.verb, again, size)
		}
		e.world.Check(t, c.Buffer())
	}
	e.world.CheckSettled(t, c.Buffer())
}
