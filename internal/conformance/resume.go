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
	"time"

	"golang.org/x/crypto/ssh"

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

// onAdded is a carrier.Progress that calls f once, when n bytes have been
// carried.
type onAdded struct {
	n    int64
	got  atomic.Int64
	once sync.Once
	f    func()
}

func (p *onAdded) Start(host, verb string, files int, bytes int64) carrier.Tracker { return p }
func (p *onAdded) Done()                                                           {}
func (p *onAdded) Resumed(int64)                                                   {}
func (p *onAdded) FileDone()                                                       {}
func (p *onAdded) Add(n int64) {
	if p.got.Add(n) >= p.n {
		p.once.Do(p.f)
	}
}

// hashKind is how the carrier verifies files on host (Session.HashKind).
func (e *Env) hashKind(host string) carrier.HashKind {
	ctx := context.Background()
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{e.Home.Key}, nil }
	s, err := carrier.Dial(ctx, e.Resolve(host)[0], ssh.InsecureIgnoreHostKey(), signers, 10*time.Second, nil)
	if err != nil {
		e.T.Fatal(err)
	}
	defer s.Close()
	return s.HashKind(ctx)
}

func zeroRange(t *testing.T, p string, off, n int64) {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// appendTo appends b to p, keeping its mtime.
func appendTo(t *testing.T, p string, b []byte) {
	keepMTime(t, p, func() error {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Write(b)
		return err
	})
}

func truncateKeepMTime(t *testing.T, p string, size int64) {
	keepMTime(t, p, func() error { return os.Truncate(p, size) })
}

// keepMTime runs change on p and gives p back the mtime it had.
func keepMTime(t *testing.T, p string, change func() error) {
	st, err := os.Stat(p)
	if err != nil {
		t.Error(err)
		return
	}
	if err := change(); err != nil {
		t.Error(err)
	}
	if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
		t.Error(err)
	}
}

// replaceByRename writes a copy of source with 64 KiB at off changed, with
// the same mtime, and renames it over source.
func replaceByRename(t *testing.T, source string, off int64) {
	b, err := os.ReadFile(source)
	if err != nil {
		t.Error(err)
		return
	}
	st, err := os.Stat(source)
	if err != nil {
		t.Error(err)
		return
	}
	copy(b[off:], bytes.Repeat([]byte("new!"), 16<<10))
	tmp := source + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Error(err)
		return
	}
	if err := os.Chtimes(tmp, st.ModTime(), st.ModTime()); err != nil {
		t.Error(err)
	}
	if err := os.Rename(tmp, source); err != nil {
		t.Error(err)
	}
}

// rewriteInPlace overwrites 64 KiB of source at off and restores its mtime,
// as disk images and databases are written.
func rewriteInPlace(t *testing.T, source string, off int64) {
	keepMTime(t, source, func() error {
		f, err := os.OpenFile(source, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(bytes.Repeat([]byte("new!"), 16<<10), off)
		return err
	})
}

// testResumeChangedSource: a pickup of a multi-MiB file is interrupted, then
// the source's first bytes are changed in place with its mtime restored; or
// the partial in the buffer is zero-filled; or the source's bytes change
// while the resumed pickup reads the rest (inside the partial's prefix, or
// in the rest behind the read). The resumed pickup must carry the source as
// it is now, or leave it in the outbox, never the old prefix with the new
// tail. Each case runs with the rest verified whole after the last byte,
// and slice by slice while it streams (VerifySlice 1 MiB).
func testResumeChangedSource(t *testing.T, start StartFunc) {
	for _, tc := range []resumeCase{
		{name: "SourceChangedInPlace", damage: func(t *testing.T, source, partial string) { rewriteInPlace(t, source, 0) }},
		// Inside the 2 MiB prefix, far enough from the start that a
		// host that cannot hash, reading the file whole again, has not
		// asked for those bytes yet.
		{name: "SourceChangedWhileResumed", during: func(t *testing.T, source string, _ int64) { rewriteInPlace(t, source, 1600<<10) }},
		{name: "PartialZeroFilled", damage: func(t *testing.T, source, partial string) {
			st, err := os.Stat(partial)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(partial, make([]byte, st.Size()), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "PartialWithHole", damage: func(t *testing.T, source, partial string) { zeroRange(t, partial, 1<<20, 64<<10) }},
		{name: "PartialLongerThanSource", damage: func(t *testing.T, source, partial string) {
			appendTo(t, partial, bytes.Repeat([]byte("more"), 3<<20))
		}},
		// Another version's partial: the same size and mtime, the first
		// MiB the same, then other bytes.
		{name: "PartialOfOtherVersion", damage: func(t *testing.T, source, partial string) {
			st, err := os.Stat(partial)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(partial, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(randBytes(rand.New(rand.NewSource(3)), int(st.Size()-1<<20)), 1<<20); err != nil {
				t.Fatal(err)
			}
		}},
		// Once the rest has been read, before the whole file is hashed.
		{name: "SourceChangedAfterTailRead", fresh: true, at: func(have, size int64) int64 { return size - have },
			during: func(t *testing.T, source string, _ int64) { rewriteInPlace(t, source, 512<<10) }},
		{name: "SourceTruncatedWhileResumed", during: func(t *testing.T, source string, _ int64) { truncateKeepMTime(t, source, 6<<20) }},
		{name: "SourceExtendedWhileResumed", during: func(t *testing.T, source string, _ int64) { appendTo(t, source, []byte("appended")) }},
		// A new inode, same size and mtime, renamed over the source.
		{name: "SourceReplacedByRename", fresh: true, during: func(t *testing.T, source string, _ int64) { replaceByRename(t, source, 1600<<10) }},
		// In the rest, behind the read: 512 KiB into the fourth MiB
		// after the partial's, 100 KiB into that MiB is changed. Its
		// slice is not complete yet, so the host hashes it after the
		// change.
		{name: "SourceChangedBehindTheRead", fresh: true,
			at:     func(have, _ int64) int64 { return (have>>20+3)<<20 + 512<<10 - have },
			during: func(t *testing.T, source string, have int64) { rewriteInPlace(t, source, (have>>20+3)<<20+100<<10) }},
	} {
		for _, slice := range []int64{0, 1 << 20} {
			name := tc.name + "/Whole"
			if slice > 0 {
				name = tc.name + "/Slices"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel() // each with its own hosts
				resumeChanged(t, start, tc, slice)
			})
		}
	}
}

// resumeCase is one case of testResumeChangedSource.
type resumeCase struct {
	name   string
	damage func(t *testing.T, source, partial string) // before the resumed pickup
	// during is the change made while resuming, once at(have, size)
	// bytes (default 1) have been carried; have is the partial's size.
	during func(t *testing.T, source string, have int64)
	at     func(have, size int64) int64
	// fresh: a host that cannot hash reads the file whole again in one
	// run, as a fresh download: a change made after its bytes were read
	// (in place, mtime restored) or to another inode is not seen there.
	fresh bool
}

// resumeChanged runs tc with the resumed pickup verifying in slices of
// slice bytes (0: the default, whole for this file).
func resumeChanged(t *testing.T, start StartFunc, tc resumeCase, slice int64) {
	e := NewEnv(t, start, "alpha", "beta")
	if tc.fresh {
		if k := e.hashKind("alpha"); k == carrier.HashByReadback {
			t.Skipf("hash kind %s: a resumed download is read as a fresh one", k)
		}
	}
	r := rand.New(rand.NewSource(11))
	e.Outbox("alpha", "beta", map[string][]byte{"img/disk.img": randBytes(r, 8<<20+5)})
	source := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "img", "disk.img")
	partial := e.interruptedPickup("alpha", 2<<20)
	opts := carrier.Options{VerifySlice: slice}
	if tc.damage != nil {
		tc.damage(t, source, partial)
	}
	st, err := os.Stat(partial)
	if err != nil {
		t.Fatal(err)
	}
	have := st.Size()
	var mu sync.Mutex // guards want
	want, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	if tc.during != nil {
		at := int64(1)
		if tc.at != nil {
			at = tc.at(have, int64(len(want)))
		}
		opts.Progress = &onAdded{n: at, f: func() {
			tc.during(t, source, have)
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
	// The resumed pickup may refuse the file (it waits in the outbox); the
	// next one carries it whole.
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
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
