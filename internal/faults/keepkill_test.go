package faults

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os/exec"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
)

// relayed starts sshd hosts behind relays that show every SFTP request to k.
func relayed(k *claimKiller) conformance.StartFunc {
	return relayedSSHD(k.see)
}

// seen is how many requests k counted since it was armed.
func (k *claimKiller) seen() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}

// runKilled runs verb, with k armed to kill it at its at-th counted
// request (at 0: never, k only counts), and returns the request it was
// killed at ("" if none) and how many it counted.
func (e *env) runKilled(t *testing.T, k *claimKiller, verb string, at int, cut bool) (landed string, seen int) {
	t.Helper()
	cmd := e.quickCLI(verb)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if at == 0 {
		at = 1 << 30
	}
	k.arm(cmd.Process, at, cut)
	err := cmd.Wait()
	seen = k.seen()
	landed = k.disarm()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if landed == "" && err != nil {
		t.Fatalf("messor %s failed without a kill: %v\n%s", verb, err, out)
	}
	return landed, seen
}

// keepRound is one round of a carrier between a source and its
// destinations: it carries (and leases), delivers (and writes receipts),
// and comes back (hands the receipts over: ledger lines, claim-then-remove,
// lease removal).
var keepRound = []string{"pickup", "dropoff", "pickup"}

// TestKilledKeepMode kills the real `messor` with SIGKILL at seeded SFTP
// requests of each step of a round over a keep-mode outbox (for beta) and
// a blackhole one (for gamma): the pickup that carries and leases, the
// dropoff that delivers and writes receipts, and the pickup that hands
// them over. Each kill lands just before the host gets the request, or
// just after it was passed on. After every kill: nothing lost, no ledger
// line or receipt naming a file not delivered with that content, a
// keep-mode file gone from its outbox only with its ledger line, no
// duplicate in an inbox; and later rounds deliver everything once and
// bring every receipt home. After a quarter of the kills another carrier,
// whose clock is 8 days ahead (the killed one's leases and claims have
// ended), does a round first: it carries what the killed one left,
// delivers no second copy, and brings its receipts home beside the killed
// one's.
func TestKilledKeepMode(t *testing.T) {
	t.Parallel()
	k := &claimKiller{match: func(r sftptest.Request) bool { return r.Path != "" }}
	crew := newCrew(t, relayed(k), 2, "alpha", "beta", "gamma")
	e, other := crew[0], crew[1]
	e.Home.WriteHostsFile("alpha")
	clk := &clock{}
	clk.Advance(8 * 24 * time.Hour)
	b := other.carrier(1<<30, carrier.Options{Now: clk.Now})
	bBuf := b.Buffer()
	e.keep("alpha", "beta")
	const seed, kills = 1212, 12
	r := rand.New(rand.NewSource(seed))
	batch := 0
	refill := func() {
		batch++
		b := fmt.Sprintf("b%02d", batch) // flat: each round lists the same directories
		e.send("alpha", "beta", map[string][]byte{b + " kept one.txt": randBytes(r, 2000), b + "-kept-two.bin": randBytes(r, 200<<10)})
		e.send("alpha", "gamma", map[string][]byte{b + "-gone.bin": randBytes(r, 3000)})
	}
	finish := func(what string) {
		t.Helper()
		for i := 0; ; i++ {
			if i == 3 {
				t.Fatalf("%s: not settled with every receipt home after 3 rounds", what)
			}
			for _, verb := range keepRound {
				if code, out := run(t, e.quickCLI(verb)); code != 0 {
					t.Fatalf("%s: then messor %s: exit %d\n%s", what, verb, code, out)
				}
				e.world.CheckOpen(t, bBuf)
			}
			if e.home(bBuf) {
				break
			}
		}
		if !t.Run(what, func(t *testing.T) {
			e.world.CheckSettledOpen(t, bBuf)
			e.world.CheckHome(t)
		}) {
			t.FailNow()
		}
	}

	// How many requests each step makes, unkilled.
	refill()
	requests := make([]int, len(keepRound))
	for i, verb := range keepRound {
		_, requests[i] = e.runKilled(t, k, verb, 0, false)
	}
	finish("unkilled")
	t.Logf("SFTP requests per step of a round: %v", requests)

	landed := 0
	for i := 0; i < kills; i++ {
		step, cut := i%len(keepRound), i/len(keepRound)%2 == 0
		at := 1 + r.Intn(requests[step])
		refill()
		var at1 string
		for j, verb := range keepRound {
			if j != step {
				e.runKilled(t, k, verb, 0, false)
			} else if at1, _ = e.runKilled(t, k, verb, at, cut); at1 != "" {
				landed++
			}
			e.world.CheckOpen(t, bBuf)
		}
		what := fmt.Sprintf("step %d (%s), request %d, cut %v: %s", step, keepRound[step], at, cut, at1)
		if i%4 == 3 {
			what += ", another carrier first"
			for _, h := range []string{"alpha", "beta", "gamma", "alpha"} {
				other.visit(b, h)
				e.world.CheckOpen(t, bBuf)
			}
		}
		finish(what)
	}
	t.Logf("seed %d: %d of %d kills landed", seed, landed, kills)
	if landed < kills/2 {
		t.Fatalf("only %d of %d kills landed", landed, kills)
	}
}

// home reports whether nothing is carried (in e's buffer, or open), no
// outbox holds a file sent, and every file sent is named by its source's
// ledger.
func (e *env) home(open ...*carrier.Buffer) bool {
	buf, err := carrier.OpenBufferReadOnly(e.Buf)
	if err != nil {
		return false
	}
	defer buf.Close()
	for _, b := range append(open, buf) {
		if st, err := carrier.ReadStatus(b); err != nil || st.Files != 0 {
			return false
		}
	}
	for k, v := range e.world.Sent {
		if e.sent(k.Source, k.Dest) != 0 {
			return false
		}
		ds, _ := e.world.Ledger(k.Source)
		if !named(ds, k, fmt.Sprintf("%x", sha256.Sum256(v))) {
			return false
		}
	}
	return true
}
