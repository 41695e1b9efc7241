package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

// cancelAfter is a carrier.Progress that cancels a run once n bytes have
// been carried: an interruption part way through a download.
type cancelAfter struct {
	n      int64
	got    atomic.Int64
	cancel context.CancelFunc
}

func (p *cancelAfter) Start(host, verb string, files int, bytes int64) carrier.Tracker { return p }
func (p *cancelAfter) Done()                                                           {}
func (p *cancelAfter) Resumed(int64)                                                   {}
func (p *cancelAfter) FileDone()                                                       {}
func (p *cancelAfter) Add(n int64) {
	if p.got.Add(n) >= p.n {
		p.cancel()
	}
}

// interruptedPickup starts picking up host's outbox and cuts the run once
// about cut bytes have arrived; it returns the partial left in the buffer
// (failing if there is none: the run finished first).
func (e *Env) interruptedPickup(host string, cut int64) string {
	e.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := e.Carrier(1<<30, carrier.Options{Progress: &cancelAfter{n: cut, cancel: cancel}})
	c.Pickup(ctx, e.Resolve(host))
	c.Buffer().Close()
	parts, _ := filepath.Glob(filepath.Join(e.Buf, "partial", "*"))
	if len(parts) != 1 {
		e.T.Fatalf("after the interrupted pickup: %d partials in the buffer, want 1", len(parts))
	}
	st, err := os.Stat(parts[0])
	if err != nil || st.Size() == 0 {
		e.T.Fatalf("after the interrupted pickup: partial %v, %v: want some bytes", st, err)
	}
	return parts[0]
}

// onFirstAdd is a carrier.Progress that calls f once, at the first bytes
// carried.
type onFirstAdd struct {
	once sync.Once
	f    func()
}

func (p *onFirstAdd) Start(host, verb string, files int, bytes int64) carrier.Tracker { return p }
func (p *onFirstAdd) Done()                                                           {}
func (p *onFirstAdd) Resumed(int64)                                                   {}
func (p *onFirstAdd) FileDone()                                                       {}
func (p *onFirstAdd) Add(int64)                                                       { p.once.Do(p.f) }

// rewriteInPlace overwrites 64 KiB of source at off and restores its mtime,
// as disk images and databases are written.
func rewriteInPlace(t *testing.T, source string, off int64) {
	st, err := os.Stat(source)
	if err != nil {
		t.Error(err)
		return
	}
	f, err := os.OpenFile(source, os.O_WRONLY, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte("new!"), 16<<10), off); err != nil {
		t.Error(err)
	}
	if err := os.Chtimes(source, st.ModTime(), st.ModTime()); err != nil {
		t.Error(err)
	}
}

// testResumeChangedSource: a pickup of a multi-MiB file is interrupted, then
// the source's first bytes are changed in place with its mtime restored; or
// the partial in the buffer is zero-filled; or the source's bytes inside the
// partial's prefix change while the resumed pickup reads the rest. The
// resumed pickup must carry the source as it is now, or leave it in the
// outbox, never the old prefix with the new tail.
func testResumeChangedSource(t *testing.T, start StartFunc) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, source, partial string)
		during func(source string) // the change made while resuming
	}{
		{"SourceChangedInPlace", func(t *testing.T, source, partial string) { rewriteInPlace(t, source, 0) }, nil},
		// Inside the 2 MiB prefix, far enough from the start that a
		// host that cannot hash, reading the file whole again, has not
		// asked for those bytes yet.
		{"SourceChangedWhileResumed", nil, func(source string) { rewriteInPlace(t, source, 1600<<10) }},
		{"PartialZeroFilled", func(t *testing.T, source, partial string) {
			st, err := os.Stat(partial)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(partial, make([]byte, st.Size()), 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEnv(t, start, "alpha", "beta")
			r := rand.New(rand.NewSource(11))
			e.Outbox("alpha", "beta", map[string][]byte{"img/disk.img": randBytes(r, 8<<20+5)})
			source := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "img", "disk.img")
			partial := e.interruptedPickup("alpha", 2<<20)
			var opts carrier.Options
			if tc.damage != nil {
				tc.damage(t, source, partial)
			}
			var mu sync.Mutex // guards want
			want, err := os.ReadFile(source)
			if err != nil {
				t.Fatal(err)
			}
			if tc.during != nil {
				opts.Progress = &onFirstAdd{f: func() {
					tc.during(source)
					b, err := os.ReadFile(source)
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					want = b
					mu.Unlock()
				}}
			}
			c := e.Carrier(1<<30, opts)
			// The resumed pickup may refuse the file (it waits in the
			// outbox); the next one carries it whole.
			for range 2 {
				c.Pickup(context.Background(), e.Resolve("alpha"))
			}
			if left := e.OutboxFiles("alpha"); len(left) != 0 {
				t.Fatalf("after two pickups the outbox still holds %v", keys(left))
			}
			mu.Lock()
			defer mu.Unlock()
			MustOK(t, e.Dropoff(c, "beta"))
			got := e.Inbox("beta", "alpha")["img/disk.img"]
			if !bytes.Equal(got, want) {
				t.Fatalf("delivered %d bytes (sha256 %x) differ from the source %x at byte %d: a mix of two versions",
					len(got), sha256.Sum256(got), sha256.Sum256(want), firstDiff(got, want))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
