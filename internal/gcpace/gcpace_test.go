package gcpace

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, scan, floor uint64
		want              int
	}{
		{0, 0, 40 << 20, 100},                 // nothing measured: the default
		{1 << 20, 1 << 20, 40 << 20, 1000},    // 40x: capped
		{4 << 20, 4 << 20, 40 << 20, 900},     // goal 40 MiB
		{4 << 20, 12 << 20, 40 << 20, 300},    // 8 MiB of stacks: goal 4 + 12*3 = 40 MiB
		{10 << 20, 10 << 20, 40 << 20, 300},   // goal 40 MiB
		{10 << 20, 100 << 20, 40 << 20, 100},  // stacks alone past the floor: never below 100
		{20 << 20, 20 << 20, 40 << 20, 100},   // twice live is the floor
		{110 << 20, 110 << 20, 40 << 20, 100}, // 100,000 files listed: as by default
	} {
		if got := Percent(c.live, c.scan, c.floor); got != c.want {
			t.Errorf("Percent(%d MiB, %d MiB) = %d, want %d", c.live>>20, c.floor>>20, got, c.want)
		}
	}
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestStartUserSettings: GOGC or GOMEMLIMIT set by the user is left as is.
func TestStartUserSettings(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		stop, started := Start(func(k string) string {
			if k == env {
				return "200"
			}
			return ""
		})
		stop()
		if started || gogc() != 100 {
			t.Errorf("with %s set: started %v, GC percent %d; want not started, 100", env, started, gogc())
		}
	}
}

// TestStartFollowsHeap: a small heap is collected at the floor, a large
// one as by default, a heap that shrank at the floor again, and stop
// gives the default back.
func TestStartFollowsHeap(t *testing.T) {
	stop, started := Start(func(string) string { return "" })
	defer stop()
	if !started {
		t.Fatal("not started with neither GOGC nor GOMEMLIMIT set")
	}
	waitPercent(t, func(p uint64) bool { return p > 100 }, "above 100 for a small heap")
	live := make([][]byte, 64)
	for i := range live {
		live[i] = make([]byte, 1<<20)
		live[i][0] = 1
	}
	waitPercent(t, func(p uint64) bool { return p == 100 }, "100 for 64 MiB live")
	runtime.KeepAlive(live)
	live = nil // the listing is done: the heap shrinks, the goal follows
	waitPercent(t, func(p uint64) bool { return p > 100 }, "above 100 once the 64 MiB are garbage")
	stop()
	if p := gogc(); p != 100 {
		t.Errorf("GC percent %d after stop, want 100", p)
	}
}

// waitPercent collects until the GC percent satisfies ok (the pacer sets
// it from a finalizer, after a collection).
func waitPercent(t *testing.T, ok func(uint64) bool, want string) {
	t.Helper()
	for range 200 {
		runtime.GC()
		if ok(gogc()) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("GC percent %d, want %s", gogc(), want)
}

// TestStartGoalCountsStacks: the heap goal stays at the floor when
// goroutine stacks (lanes, SSH channels) are large beside a small live
// heap; the runtime scales stacks and globals by the GC percent too.
func TestStartGoalCountsStacks(t *testing.T) {
	stop, _ := Start(func(string) string { return "" })
	defer stop()
	release := make(chan struct{})
	defer close(release)
	for range 64 {
		go deepStack(1<<10, release) // ~100 KiB of stack each
	}
	live := make([]byte, 2<<20)
	var goal uint64
	for range 50 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		goal = heapGoal()
		if gogc() > 100 && goal <= Floor+Floor/8 {
			return
		}
	}
	runtime.KeepAlive(live)
	t.Errorf("heap goal %d MiB at GC percent %d, want about the %d MiB floor", goal>>20, gogc(), Floor>>20)
}

func deepStack(n int, release chan struct{}) byte {
	var pad [64]byte
	if n == 0 {
		<-release
		return pad[0]
	}
	return deepStack(n-1, release) + pad[n%64]
}

func heapGoal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestStopHolds: after stop, no collection sets the GC percent again (the
// finalizer armed before stop fires once, and arms nothing).
func TestStopHolds(t *testing.T) {
	stop, _ := Start(func(string) string { return "" })
	waitPercent(t, func(p uint64) bool { return p > 100 }, "above 100 for a small heap")
	stop()
	for range 20 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		if p := gogc(); p != 100 {
			t.Fatalf("GC percent %d after stop and a collection, want 100", p)
		}
	}
}
