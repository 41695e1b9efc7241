package carrier_test

import (
	"context"
	"log/slog"
	"math/rand"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
)

// cutAfter is a carrier.Progress that cancels a run once n bytes have been
// carried.
type cutAfter struct {
	n      int64
	got    atomic.Int64
	cancel context.CancelFunc
}

func (p *cutAfter) Start(string, string, int, int64) carrier.Tracker { return p }
func (p *cutAfter) Done()                                            {}
func (p *cutAfter) Resumed(int64)                                    {}
func (p *cutAfter) FileDone()                                        {}
func (p *cutAfter) Add(n int64) {
	if p.got.Add(n) >= p.n {
		p.cancel()
	}
}

// bigOutbox makes hosts alpha and beta (by start) with one file of size
// random bytes in alpha's outbox for beta, big/file.bin.
func bigOutbox(t *testing.T, start conformance.StartFunc, size int) (*conformance.Env, []byte) {
	e := conformance.NewEnv(t, start, "alpha", "beta")
	data := make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(data)
	e.Outbox("alpha", "beta", map[string][]byte{"big/file.bin": data})
	return e, data
}

// A big download whose source is hashed on the host (from an agent with
// VerifySource; resumed, from any host that hashes) is checked slice by
// slice while it streams: the carrier's log says so, and what is left
// after the last byte is one slice and the resumed prefix, not the whole
// file hashed again.
func TestPickupVerifiedInSlices(t *testing.T) {
	for _, tc := range []struct {
		name    string
		start   conformance.StartFunc
		resumed bool
		want    string
	}{
		{"AgentFresh", conformance.Agent, false, `verify="10 slices"`},
		// From the MiB where the partial ends: 9 or fewer.
		{"AgentResumed", conformance.Agent, true, `verify="[1-9] slices"`},
		{"OpenSSHResumed", conformance.SSHD(false), true, `verify="[1-9] slices"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, data := bigOutbox(t, tc.start, 9<<20+12345)
			if tc.resumed {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				c := e.Carrier(1<<30, carrier.Options{Progress: &cutAfter{n: 2<<20 + 300<<10, cancel: cancel}})
				c.Pickup(ctx, e.Resolve("alpha"))
				c.Buffer().Close()
			}
			log := &syncBuffer{}
			c := e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20,
				Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			if tc.resumed && !strings.Contains(log.String(), "resuming download") {
				t.Fatalf("the second pickup did not resume:\n%s", log)
			}
			if !regexp.MustCompile(tc.want).MatchString(log.String()) {
				t.Errorf("the source was not checked in slices (want %s):\n%s", tc.want, log)
			}
			conformance.MustOK(t, e.Dropoff(c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": data})
		})
	}
}

// Cancelled while a resumed download is checked slice by slice (host hashes
// outstanding): Pickup returns, nothing is carried or lost, the partial is
// kept, and the next run resumes and carries the source.
func TestPickupSlicesCancelled(t *testing.T) {
	for _, h := range sliceHosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e, data := bigOutbox(t, h.start, 9<<20+77)
			for _, cut := range []int64{2 << 20, 3 << 20} { // the second resumes, checks slices, is cut
				ctx, cancel := context.WithCancel(context.Background())
				c := e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20, Progress: &cutAfter{n: cut, cancel: cancel}})
				c.Pickup(ctx, e.Resolve("alpha"))
				cancel()
				if st, _ := carrier.ReadStatus(c.Buffer()); st.Files != 0 {
					t.Fatalf("cut at %d: %d files carried", cut, st.Files)
				}
				c.Buffer().Close()
				if len(e.OutboxFiles("alpha")) != 1 {
					t.Fatalf("cut at %d: the source left the outbox", cut)
				}
			}
			log := &syncBuffer{}
			c := e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20,
				Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			if !strings.Contains(log.String(), "resuming download") || !strings.Contains(log.String(), " slices\"") {
				t.Errorf("the last pickup did not resume checked in slices:\n%s", log)
			}
			conformance.MustOK(t, e.Dropoff(c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": data})
		})
	}
}
