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
	r := rand.New(rand.NewSource(20261202))
	batch := 0
	refill := func() {
		batch++
		e.send("alpha", "beta", smallTree(r, fmt.Sprintf("k%02d", batch), 400, 8<<10))
	}
	// A capped link: an archive of 400 files streams for about a second.
	e.proxy("alpha").SetRate(2 << 20)
	killBatched(t, e, r, "pickup", `msg="batch read"`, refill, func() bool { return len(e.OutboxFiles("alpha")) < 64 })
}

// killBatched kills `messor verb` at random moments within 1.5 s until 15
// kills landed mid-run, checking the invariant after each and calling
// refill first and whenever low says too few files are left to batch
// (64); then one run to its end must log batched (the files went in
// batches), and later runs settle everything.
func killBatched(t *testing.T, e *env, r *rand.Rand, verb, batched string, refill func(), low func() bool) {
	t.Helper()
	refill()
	landed := 0
	for i := 0; landed < 15; i++ {
		if i >= 120 {
			t.Fatalf("only %d kills landed in %d runs", landed, i)
		}
		delay := time.Duration(r.Int63n(int64(1500 * time.Millisecond)))
		if killed, _, _ := killCLI(t, e.cli(verb), delay); killed {
			landed++
		}
		e.world.Check(t, nil)
		if low() {
			refill()
		}
	}
	refill()
	cmd := e.cli(verb)
	cmd.Args = append(cmd.Args, "-v")
	if code, out := run(t, cmd); code != 0 || !strings.Contains(out, batched) {
		t.Fatalf("messor %s: exit %d, no %s:\n%s", verb, code, batched, out)
	}
	e.world.Check(t, nil)
	e.finish(t)
}
