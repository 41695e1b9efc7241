package carrier_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/protocol"
)

// heapAtLast is a carrier.Progress that measures the live heap (after a
// collection) when the last of files files is done, still inside the
// visit.
type heapAtLast struct {
	files int64
	done  atomic.Int64
	once  sync.Once
	live  uint64
}

func (h *heapAtLast) Start(host, verb string, files int, bytes int64) carrier.Tracker { return h }
func (h *heapAtLast) Add(int64)                                                       {}
func (h *heapAtLast) Resumed(int64)                                                   {}
func (h *heapAtLast) Done()                                                           {}
func (h *heapAtLast) FileDone() {
	if h.done.Add(1) == h.files {
		h.once.Do(func() { h.live = liveHeap() })
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestBatchHeapPerFile: a pickup of many small files read in archives
// holds, by its last file, no more than a few hundred bytes per file of
// the visit (its listing and plan): not the files' contents, nor a slot
// per file (batch.go), which held 100,000 files' peak RSS past 256 MiB.
func TestBatchHeapPerFile(t *testing.T) {
	const n, size = 4000, 512
	t.Cleanup(carrier.SetBatchMin(batchMin))
	e := conformance.NewEnv(t, conformance.SSHD(false), "alpha", "beta")
	out := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")))
	old := time.Now().Add(-time.Hour)
	data := make([]byte, size)
	for i := range n {
		p := filepath.Join(out, fmt.Sprintf("d%02d/f%06d.dat", i%20, i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		copy(data, fmt.Sprint(i))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	h := &heapAtLast{files: n}
	c := e.Carrier(1<<40, carrier.Options{Progress: h})
	base := liveHeap()
	reps := c.Pickup(context.Background(), e.Resolve("alpha"))
	conformance.MustOK(t, reps)
	if reps[0].Files != n {
		t.Fatalf("picked up %d files, want %d", reps[0].Files, n)
	}
	if h.live == 0 {
		t.Fatal("the last file's heap was not measured")
	}
	perFile := (int64(h.live) - int64(base)) / n
	t.Logf("live heap by the last file: %d bytes per file", perFile)
	if perFile > 512 {
		t.Errorf("live heap by the last file: %d bytes per file, want at most 512", perFile)
	}
}
