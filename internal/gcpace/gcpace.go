// Package gcpace sets how often a messor process collects garbage.
//
// A transfer allocates about twice the bytes it moves (x/crypto/ssh copies
// every SSH packet into a fresh buffer, pkg/sftp allocates every SFTP
// reply), while what stays live is a few MiB. With Go's default GOGC=100
// the heap is collected each time it doubles: every few MiB, hundreds of
// times per GiB, 10-15% of the carrier's CPU on a big pickup. A listing of
// 100,000 files is the opposite: over 100 MiB live, where a higher GOGC
// would grow the process by as much again.
//
// So the heap goal here is the larger of Floor and twice the live heap: a
// small heap grows to Floor between collections, a large one is collected
// as GOGC=100 collects it. The GC percent is set again after every
// collection from the live heap it measured, so the goal follows the heap
// within one cycle; it never goes below 100 (no more collections than by
// default), nor above MaxPercent.
package gcpace

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Floor is the heap goal of a small heap: well within the carrier's
// 64 MiB peak RSS for a big file (bench "big").
const Floor = 32 << 20

// MaxPercent bounds the GC percent for a nearly empty heap.
const MaxPercent = 1000

// Percent is the GC percent that puts the heap goal at the larger of
// floor and twice live. The runtime sets the goal at live + scan*percent/100,
// where scan is live plus the goroutine stacks and globals it scanned: with
// large stacks beside a small heap, a percent from live alone would put the
// goal several times over the floor (TestStartGoalCountsStacks).
func Percent(live, scan, floor uint64) int {
	if live == 0 || live >= floor/2 {
		return 100
	}
	return max(100, min(MaxPercent, int((floor-live)*100/max(scan, live))))
}

// Start paces the collector of this process as the package says, unless
// the user set GOGC or GOMEMLIMIT (getenv reads the environment), and
// reports whether it did. It lasts until stop is called.
func Start(getenv func(string) string) (stop func(), started bool) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return func() {}, false
	}
	p := &pacer{sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}}
	p.set()
	p.arm()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.stopped {
			p.stopped = true
			debug.SetGCPercent(100)
		}
	}, true
}

type sentinel struct{ p *pacer }

type pacer struct {
	mu      sync.Mutex
	sample  []metrics.Sample
	stopped bool
}

// arm calls set after the next collection, and arms itself again: a
// finalizer runs once the object it is set on was found unreachable, that
// is after a collection.
func (p *pacer) arm() {
	s := &sentinel{p} // holds a pointer: never a tiny allocation, which shares its block and is finalized late
	runtime.SetFinalizer(s, func(*sentinel) {
		if p.set() {
			p.arm()
		}
	})
}

// set sets the GC percent from the live heap, unless stopped, and reports
// whether it did.
func (p *pacer) set() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	metrics.Read(p.sample)
	var n [3]uint64 // live heap, stacks, globals
	for i, v := range p.sample {
		if v.Value.Kind() == metrics.KindUint64 {
			n[i] = v.Value.Uint64()
		}
	}
	debug.SetGCPercent(Percent(n[0], n[0]+n[1]+n[2], Floor))
	return true
}
