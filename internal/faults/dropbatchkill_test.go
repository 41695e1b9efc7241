package faults

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
)

// TestKilledBatchedDropoff kills `messor dropoff` with SIGKILL at seeded
// random moments while it delivers many small files proven in batches by
// the exec helper (between the writes of a group, its hash and sync
// command, and the renames, directory syncs and receipts after it): after
// every kill nothing is lost or escaped and no inbox file holds anything
// but a version sent, and later runs deliver every file once, intact.
func TestKilledBatchedDropoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	e.Home.WriteHostsFile("alpha")
	const seed = 20261203
	r := rand.New(rand.NewSource(seed))
	batch := 0
	refill := func() {
		batch++
		e.send("alpha", "beta", smallTree(r, fmt.Sprintf("d%02d", batch), 400, 8<<10))
		if code, out := e.runCLI(t, "pickup"); code != 0 {
			t.Fatalf("messor pickup: exit %d\n%s", code, out)
		}
	}
	refill()
	// A capped link: 400 files of up to 8 KiB take about a second.
	e.proxy("beta").SetRate(2 << 20)
	landed := 0
	for i := 0; landed < 15; i++ {
		if i >= 120 {
			t.Fatalf("only %d kills landed in %d runs", landed, i)
		}
		delay := time.Duration(r.Int63n(int64(1500 * time.Millisecond)))
		if killed, _, _ := killCLI(t, e.cli("dropoff"), delay); killed {
			landed++
		}
		e.world.Check(t, nil)
		if e.buffered(t) < 64 { // too few to batch
			refill()
		}
	}
	// The binary proves this buffer's files in batches.
	refill()
	cmd := e.cli("dropoff")
	cmd.Args = append(cmd.Args, "-v")
	if code, out := run(t, cmd); code != 0 || !strings.Contains(out, `msg="batch verify"`) {
		t.Fatalf("messor dropoff: exit %d, no batch proven:\n%s", code, out)
	}
	e.world.Check(t, nil)
	e.finish(t)
}

// buffered is how many files e's buffer holds.
func (e *env) buffered(t *testing.T) int {
	t.Helper()
	b, err := carrier.OpenBufferReadOnly(e.Buf)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := carrier.ReadStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	return st.Files
}
