package faults

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/messor-sync/messor/carrier"
)

// TestKilledBatchedDropoff kills `messor dropoff` with SIGKILL at seeded
// random moments while it delivers many small files proven in batches by
// the exec helper (between the writes of a group, its check, and the
// renames, directory syncs and receipts after it): after every kill
// nothing is lost or escaped and no inbox file holds anything but a
// version sent, and later runs deliver every file once, intact.
func TestKilledBatchedDropoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	e.Home.WriteHostsFile("alpha")
	r := rand.New(rand.NewSource(20261203))
	batch := 0
	refill := func() {
		batch++
		e.send("alpha", "beta", smallTree(r, fmt.Sprintf("d%02d", batch), 400, 8<<10))
		if code, out := e.runCLI(t, "pickup"); code != 0 {
			t.Fatalf("messor pickup: exit %d\n%s", code, out)
		}
	}
	// A capped link: 400 files of up to 8 KiB take about a second.
	e.proxy("beta").SetRate(2 << 20)
	killBatched(t, e, r, "dropoff", `msg="batch verify"`, refill, func() bool { return e.buffered(t) < 64 })
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
