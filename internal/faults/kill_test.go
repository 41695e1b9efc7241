package faults

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/messor-sync/messor/internal/conformance"
)

// cli runs the messor binary for e's carrier, with flags after verb.
func (e *env) cli(verb string, flags ...string) *exec.Cmd {
	hosts := filepath.Join(e.Home.Dir, ".messor_pickup_hosts")
	args := append([]string{"--buffer", e.Buf, "--limit", "1GiB", "--hosts", hosts, "--settle", "0",
		"--connect-timeout", conformance.TestConnectTimeout.String(), verb}, flags...)
	cmd := exec.Command(messorBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+e.Home.Dir, "MESSOR_BUFFER=", "MESSOR_LIMIT=", "MESSOR_HOSTS=", "SSH_AUTH_SOCK=")
	return cmd
}

// runCLI runs verb to the end and returns its exit code and output.
func (e *env) runCLI(t *testing.T, verb string) (int, string) {
	t.Helper()
	return run(t, e.cli(verb))
}

// startCLI starts verb with flags; its output goes to out, and exited gets
// what Wait returns.
func (e *env) startCLI(t *testing.T, verb string, flags ...string) (cmd *exec.Cmd, out *bytes.Buffer, exited <-chan error) {
	t.Helper()
	cmd = e.cli(verb, flags...)
	out = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	return cmd, out, ch
}

// settled reports whether nothing is left to carry.
func (e *env) settled(t *testing.T) bool {
	return e.buffered(t) == 0 && len(e.OutboxFiles("alpha")) == 0
}

// TestKilledCarrier kills `messor pickup` and `messor dropoff` with SIGKILL
// at seeded random moments, at least 25 times each while they run, checks
// the invariant after every kill, and lets later runs finish the work.
func TestKilledCarrier(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	e.Home.WriteHostsFile("alpha")
	const seed = 20240611
	r := rand.New(rand.NewSource(seed))
	batch := 0
	refill := func() {
		batch++
		files := smallTree(r, fmt.Sprintf("b%02d", batch), 12, 16<<10)
		files[fmt.Sprintf("b%02d/one.bin", batch)] = randBytes(r, 1<<20+r.Intn(1<<20))
		files[fmt.Sprintf("b%02d/two.bin", batch)] = randBytes(r, r.Intn(1<<20))
		e.send("alpha", "beta", files)
	}
	refill()
	// A capped link so that a run lasts a few hundred milliseconds and
	// the kills land mid-transfer.
	e.proxy("alpha").SetRate(6 << 20)
	e.proxy("beta").SetRate(6 << 20)

	landed := map[string]int{}
	const want = 25
	// Kills land at a random moment within window. On a loaded machine a
	// run can outlast any fixed window, and then no run ever finishes and
	// dropoff never has work: a verb killed 8 times in a row gets a window
	// twice as long, so that the kills keep landing mid-run and the work
	// still moves.
	window := map[string]time.Duration{"pickup": 700 * time.Millisecond, "dropoff": 700 * time.Millisecond}
	streak := map[string]int{}
	for i := 0; landed["pickup"] < want || landed["dropoff"] < want; i++ {
		if i >= 400 {
			t.Fatalf("only %v kills landed in %d runs (windows %v)", landed, i, window)
		}
		verb := []string{"pickup", "dropoff"}[i%2]
		delay := time.Duration(r.Int63n(int64(window[verb])))
		if killed, _, _ := killCLI(t, e.cli(verb), delay); killed {
			landed[verb]++ // it was still running
			if streak[verb]++; streak[verb] == 8 && window[verb] < 20*time.Second {
				window[verb] *= 2
				streak[verb] = 0
			}
		} else {
			streak[verb] = 0
		}
		e.world.Check(t, nil)
		if e.settled(t) {
			refill()
		}
	}
	t.Logf("seed %d: %d kills landed in pickup, %d in dropoff, over %d batches", seed, landed["pickup"], landed["dropoff"], batch)

	e.finish(t)
}

// finish runs pickup and dropoff without kills until nothing is left to
// carry (at most 6 times), then checks every file arrived once, intact.
func (e *env) finish(t *testing.T) {
	t.Helper()
	for i := 0; !e.settled(t); i++ {
		if i == 6 {
			t.Fatal("not settled after 6 runs without kills")
		}
		for _, verb := range []string{"pickup", "dropoff"} {
			if code, out := e.runCLI(t, verb); code != 0 {
				t.Fatalf("messor %s: exit %d\n%s", verb, code, out)
			}
		}
	}
	e.world.CheckSettled(t, nil)
}

// TestInterrupt sends SIGINT in the middle of a pickup and of a dropoff:
// the CLI stops cleanly with exit code 130, and the next run finishes.
func TestInterrupt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	e.Home.WriteHostsFile("alpha")
	r := rand.New(rand.NewSource(3))
	e.send("alpha", "beta", map[string][]byte{"int/big.bin": randBytes(r, 4<<20), "int/small": []byte("x")})
	for _, leg := range []struct{ verb, host string }{{"pickup", "alpha"}, {"dropoff", "beta"}} {
		p := e.proxy(leg.host)
		p.SetRate(4 << 20)
		cmd, out, exited := e.startCLI(t, leg.verb)
		waitCarried(t, p.BytesUp()+p.BytesDown()+1<<20, p, exited, out)
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("%s: still running 30s after SIGINT\n%s", leg.verb, out)
		}
		code := cmd.ProcessState.ExitCode()
		t.Logf("%s: SIGINT: exit %d: %s", leg.verb, code, bytes.TrimSpace(out.Bytes()))
		switch code {
		case 130:
		default:
			t.Errorf("%s: exit code %d after SIGINT, want 130", leg.verb, code)
		}
		if bytes.Contains(out.Bytes(), []byte("level=ERROR")) {
			t.Errorf("%s: an interruption is reported as failures:\n%s", leg.verb, out.Bytes())
		}
		e.world.Check(t, nil)
		p.SetRate(0)
		if code, out := e.runCLI(t, leg.verb); code != 0 {
			t.Fatalf("messor %s after SIGINT: exit %d\n%s", leg.verb, code, out)
		}
		e.world.Check(t, nil)
	}
	e.world.CheckSettled(t, nil)
}
