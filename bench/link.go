package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/messor-sync/messor/internal/flaky"
)

// Wi-Fi as emulated here: 5 ms each way (10 ms RTT) and 200 Mbit/s per
// direction, by internal/flaky's user-space proxy (the kernel has no netem).
const (
	wifiOneWay = 5 * time.Millisecond
	wifiRate   = 200_000_000 / 8 // bytes per second, each direction
)

// tbAdapter lets internal/flaky, written for tests, run in this program: it
// implements the few testing.TB methods flaky calls (Helper, Fatalf,
// Cleanup). Any other method panics on the nil embedded TB, which would
// show at once in the smoke test.
type tbAdapter struct {
	testing.TB
	cleanups []func()
}

func (t *tbAdapter) Helper() {}

func (t *tbAdapter) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

func (t *tbAdapter) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

func (t *tbAdapter) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

// close runs the cleanups, last first.
func (t *tbAdapter) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// wifiProxy starts an emulated Wi-Fi link in front of target.
func wifiProxy(tb *tbAdapter, target string) *flaky.Proxy {
	p := flaky.New(tb, target)
	p.SetLatency(wifiOneWay)
	p.SetRate(wifiRate)
	return p
}
