package carrier_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sliceEnv carries one file of size bytes from alpha to beta (hosts made by
// start), with slices of 1 MiB, and returns what the carrier logged.
type sliceEnv struct {
	*conformance.Env
	c    *carrier.Carrier
	log  *syncBuffer
	data []byte
}

func newSliceEnv(t *testing.T, start conformance.StartFunc, size int) *sliceEnv {
	e := &sliceEnv{Env: conformance.NewEnv(t, start, "alpha", "beta"), log: &syncBuffer{}}
	e.data = make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(e.data)
	e.Outbox("alpha", "beta", map[string][]byte{"big/file.bin": e.data})
	log := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.c = e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20, Logger: log})
	conformance.MustOK(t, e.c.Pickup(context.Background(), e.Resolve("alpha")))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("carrier log:\n%s", e.log)
		}
	})
	return e
}

// hostPath is where the host keeps SFTP path p (relative to its login
// directory, for sshd and agent alike).
func (e *sliceEnv) hostPath(p string) string {
	return filepath.Join(e.Dirs["beta"], filepath.FromSlash(p))
}

// partials lists the partial uploads in beta's inbox.
func (e *sliceEnv) partials() []string {
	var out []string
	filepath.Walk(filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.Inbox)), func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), protocol.ReservedPrefix+".part.") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

var sliceHosts = []struct {
	name  string
	start conformance.StartFunc
}{
	{"OpenSSH", conformance.SSHD(false)},
	{"Agent", conformance.Agent},
}

// A file of several slices is verified slice by slice while it goes up,
// and arrives.
func TestSliceVerifiedUpload(t *testing.T) {
	for _, h := range sliceHosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e := newSliceEnv(t, h.start, 9<<20+12345)
			var written atomic.Int64
			carrier.SetSliceWritten(e.c, func(string, int64, int64) { written.Add(1) })
			conformance.MustOK(t, e.Dropoff(e.c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
			if n := written.Load(); n != 10 {
				t.Errorf("%d slices written, want 10", n)
			}
			if !strings.Contains(e.log.String(), `verify="10 slices"`) {
				t.Errorf("the upload was not verified in slices")
			}
			if p := e.partials(); len(p) != 0 {
				t.Errorf("partials left: %v", p)
			}
		})
	}
}

// A byte changed on the host after a slice was written and before the
// host hashed it: the upload does not verify, the partial is removed,
// nothing lands in the inbox, and the next run delivers.
func TestSliceCorruptedOnHost(t *testing.T) {
	for _, h := range sliceHosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e := newSliceEnv(t, h.start, 6<<20+7)
			var flipped atomic.Bool
			carrier.SetSliceWritten(e.c, func(partial string, start, end int64) {
				if start != 1<<20 {
					return
				}
				f, err := os.OpenFile(e.hostPath(partial), os.O_RDWR, 0)
				if err != nil {
					t.Errorf("hook: %v", err)
					return
				}
				defer f.Close()
				b := make([]byte, 1)
				f.ReadAt(b, start+4321)
				b[0] ^= 0x20
				if _, err := f.WriteAt(b, start+4321); err == nil {
					flipped.Store(true)
				}
			})
			rs := e.Dropoff(e.c, "beta")
			if !flipped.Load() {
				t.Fatal("the hook did not change the host's file")
			}
			if len(rs) != 1 || len(rs[0].Failed) != 1 || !strings.Contains(rs[0].Failed[0].Reason, "does not verify") ||
				!strings.Contains(rs[0].Failed[0].Reason, "removed, will retry") {
				t.Fatalf("want one failure to verify, got %s: %v", rs[0].Summary(), rs[0].Failed)
			}
			t.Logf("%s", rs[0].Failed[0].Reason)
			if p := e.partials(); len(p) != 0 {
				t.Errorf("partial not removed: %v", p)
			}
			if got := e.Inbox("beta", "alpha"); len(got) != 0 {
				t.Errorf("inbox holds %d files after a failed verification", len(got))
			}
			if st, _ := carrier.ReadStatus(e.c.Buffer()); st.Files != 1 {
				t.Errorf("buffer holds %d files, want the one that failed", st.Files)
			}
			carrier.SetSliceWritten(e.c, nil)
			conformance.MustOK(t, e.Dropoff(e.c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
		})
	}
}

// An agent that does not know hash-slice (older than it): the upload is
// verified whole after its last byte, and arrives.
func TestSliceRefusedByOlderAgent(t *testing.T) {
	t.Parallel()
	e := newSliceEnv(t, conformance.Agent, 4<<20+1)
	carrier.SetSliceRequest(e.c, "hash-slice-unknown@messor")
	conformance.MustOK(t, e.Dropoff(e.c, "beta"))
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
	log := e.log.String()
	if !strings.Contains(log, "refused to hash a slice") || !strings.Contains(log, "verify=whole") {
		t.Errorf("want a fallback to the whole-file hash")
	}
}

// Cancelled in the middle of a sliced upload: Dropoff returns promptly,
// the file waits, and the next run resumes and delivers it.
func TestSliceUploadCancelled(t *testing.T) {
	for _, h := range sliceHosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e := newSliceEnv(t, h.start, 8<<20)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			carrier.SetSliceWritten(e.c, func(_ string, start, _ int64) {
				if start == 2<<20 {
					cancel()
				}
			})
			done := make(chan []*carrier.HostReport, 1)
			go func() {
				rs, _ := e.c.Dropoff(ctx, e.Resolve("beta"))
				done <- rs
			}()
			var rs []*carrier.HostReport
			select {
			case rs = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Dropoff still running 20s after it was cancelled")
			}
			if len(rs) != 1 || len(rs[0].Waiting) != 1 {
				t.Fatalf("want the file waiting, got %v", rs)
			}
			carrier.SetSliceWritten(e.c, nil)
			conformance.MustOK(t, e.Dropoff(e.c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
			if !strings.Contains(e.log.String(), "resuming upload") {
				t.Errorf("the second run did not resume")
			}
		})
	}
}

// A partial whose verified prefix ends at neither a slice's nor a MiB's
// boundary is resumed slice by slice: the first slice starts at the MiB
// before the resume point.
func TestSliceResumedUnaligned(t *testing.T) {
	for _, h := range sliceHosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e := newSliceEnv(t, h.start, 7<<20+1)
			st, _ := carrier.ReadStatus(e.c.Buffer())
			rel := filepath.Join(protocol.InboxDir("alpha"), "big", protocol.PartialName("big/file.bin", st.Items[0].Hash, e.c.Buffer().ID()))
			os.MkdirAll(filepath.Dir(e.hostPath(rel)), 0o755)
			// The end does not verify; the 64 KiB slice before it
			// (holeBefore) does.
			const have, off = 3<<20 + 600<<10 + 12345, 3<<20 + 536<<10 + 12345
			bad := append([]byte(nil), e.data[:have]...)
			copy(bad[len(bad)-1000:], make([]byte, 1000))
			if err := os.WriteFile(e.hostPath(rel), bad, 0o644); err != nil {
				t.Fatal(err)
			}
			var starts []int64
			carrier.SetSliceWritten(e.c, func(_ string, start, _ int64) { starts = append(starts, start) })
			conformance.MustOK(t, e.Dropoff(e.c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
			log := e.log.String()
			if !strings.Contains(log, fmt.Sprintf("offset=%d", off)) || !strings.Contains(log, `verify="5 slices"`) {
				t.Errorf("want a resume at %d verified in 5 slices", off)
			}
			if want := []int64{3 << 20, 4 << 20, 5 << 20, 6 << 20, 7 << 20}; !slices.Equal(starts, want) {
				t.Errorf("slices start at %v, want %v", starts, want)
			}
		})
	}
}

// A big upload does not wait for the host's capabilities: its first slices
// go out while the probe (on a slow login shell: the exec helper's start
// and the probe's commands) is still held back, and are verified slice by
// slice once the probe answers; on a host that then turns out not to hash
// for us (no exec), the whole file is verified after its last byte (read
// back). The probe is released by the fourth slice written; had the upload
// waited for the probe, it would be released only by the bound in
// holdProbeUntilSlice, and the test fails.
func TestSliceUploadNotWaitingForProbe(t *testing.T) {
	for _, h := range []struct {
		name   string
		start  conformance.StartFunc
		verify string
	}{
		{"Exec", conformance.SSHD(false), `verify="8 slices"`},
		{"NoExec", conformance.SSHD(true), "verify=whole"},
	} {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e := newSliceEnv(t, h.start, 8<<20)
			waitedOut := holdProbeUntilSlice(e)
			conformance.MustOK(t, e.Dropoff(e.c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
			if waitedOut.Load() {
				t.Errorf("the upload waited for the host's probe before writing")
			}
			if !strings.Contains(e.log.String(), h.verify) {
				t.Errorf("the upload was not verified as %s", h.verify)
			}
			if p := e.partials(); len(p) != 0 {
				t.Errorf("partials left: %v", p)
			}
		})
	}
}

// holdProbeUntilSlice holds e's sessions' probes of the host until the
// fourth slice of an upload is written, or a bound passes (then the flag it
// returns is set).
func holdProbeUntilSlice(e *sliceEnv) *atomic.Bool {
	release := make(chan struct{})
	var once sync.Once
	var waitedOut atomic.Bool
	carrier.SetProbeGate(e.c, func() {
		select {
		case <-release:
		case <-time.After(20 * time.Second):
			waitedOut.Store(true)
		}
	})
	carrier.SetSliceWritten(e.c, func(_ string, start, _ int64) {
		if start >= 3<<20 { // more slices than may wait for the host (sliceAhead)
			once.Do(func() { close(release) })
		}
	})
	return &waitedOut
}

// A host whose dd reads on past count= (an odd dd first in the login's
// PATH) must not be taken for one that hashes slices: a slice ending on a
// whole dd block is cut by dd's count alone (protocol.HashRangeCommand),
// and its digest would take in the rest of the file, failing every upload
// as not verifying. The slice probe checks count; such a host has the whole
// file verified, and the dropoff succeeds.
func TestSliceHostDDIgnoringCount(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	dd, err := exec.LookPath("dd")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\na=\nfor x in \"$@\"; do case $x in count=*) ;; *) a=\"$a $x\";; esac; done\nexec " + dd + " $a\n"
	if err := os.WriteFile(filepath.Join(bin, "dd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	login := "PATH=" + bin + ":$PATH; export PATH"
	start := func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		return batchHost{sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, LoginScript: login})}
	}
	e := newSliceEnv(t, start, 8<<20)
	conformance.MustOK(t, e.Dropoff(e.c, "beta"))
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
	if !strings.Contains(e.log.String(), "verify=whole") {
		t.Errorf("the upload was not verified whole")
	}
}
