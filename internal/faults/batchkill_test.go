package faults

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// TestKilledBatchedPickup kills `messor pickup` with SIGKILL at seeded
// random moments while it reads many small files in tar archives through
// the exec helper (and between an archive and its commits and claims):
// after every kill nothing is lost or escaped, and later runs deliver
// every file once, intact.
func TestKilledBatchedPickup(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	e.Home.WriteHostsFile("alpha")
	const seed = 20261202
	r := rand.New(rand.NewSource(seed))
	batch := 0
	refill := func() {
		batch++
		e.send("alpha", "beta", smallTree(r, fmt.Sprintf("k%02d", batch), 400, 8<<10))
	}
	refill()
	// A capped link: an archive of 400 files streams for about a second.
	e.proxy("alpha").SetRate(2 << 20)
	landed := 0
	for i := 0; landed < 15; i++ {
		if i >= 120 {
			t.Fatalf("only %d kills landed in %d runs", landed, i)
		}
		delay := time.Duration(r.Int63n(int64(1500 * time.Millisecond)))
		if killed, _, _ := killCLI(t, e.cli("pickup"), delay); killed {
			landed++
		}
		e.world.Check(t, nil)
		if len(e.OutboxFiles("alpha")) < 64 { // too few to batch
			refill()
		}
	}
	// The binary reads this outbox in archives.
	refill()
	cmd := e.cli("pickup")
	cmd.Args = append(cmd.Args, "-v")
	if code, out := run(t, cmd); code != 0 || !strings.Contains(out, `msg="batch read"`) {
		t.Fatalf("messor pickup: exit %d, no archive read:\n%s", code, out)
	}
	e.world.Check(t, nil)
	e.finish(t)
}
