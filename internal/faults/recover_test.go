package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
)

// partialBytes is what the buffer's partial downloads hold.
func partialBytes(buf string) int64 {
	var n int64
	ents, _ := os.ReadDir(filepath.Join(buf, "partial"))
	for _, d := range ents {
		if i, err := d.Info(); err == nil {
			n += i.Size()
		}
	}
	return n
}

// A pickup interrupted when the partial holds most of the limit resumes
// under that limit: the partial's own bytes count toward its own file, not
// against the room it needs (a 400 MB file cut at 250 MB under the default
// 500 MiB limit waited "over the buffer limit" for ever).
func TestInterruptedPickupResumesUnderLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(6))
	const size, limit = 8 << 20, 10 << 20
	e.send("alpha", "beta", map[string][]byte{"big/film.bin": randBytes(r, size)})
	p := e.proxy("alpha")
	p.SetRate(4 << 20)

	c := e.carrier(limit, carrier.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []*carrier.HostReport, 1)
	go func() { done <- c.Pickup(ctx, e.Resolve("alpha")) }()
	for partialBytes(e.Buf) < 6<<20 {
		select {
		case <-done:
			t.Fatal("pickup ended before it could be interrupted")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-done
	c.Buffer().Close()
	have := partialBytes(e.Buf)
	t.Logf("interrupted with %d of %d bytes in the partial, limit %d", have, size, limit)
	if have <= limit-size {
		t.Fatalf("partial holds %d bytes: too few to show anything", have)
	}
	e.world.Check(t, nil)

	p.SetRate(0)
	c = e.carrier(limit, carrier.Options{})
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	if err := reportsErr(rs); err != nil {
		t.Fatal(err)
	}
	if rs[0].Files != 1 {
		t.Fatalf("resumed pickup carried %d files, want 1: %s %v", rs[0].Files, rs[0].Summary(), rs[0].Waiting)
	}
	if used := c.Buffer().Used(); used > limit {
		t.Errorf("buffer uses %d bytes, over its limit %d", used, limit)
	}
	if rs, _ := c.Dropoff(context.Background(), e.Resolve("beta")); reportsErr(rs) != nil {
		t.Fatal(reportsErr(rs))
	}
	e.world.CheckSettled(t, c.Buffer())
}

// TestKilledRecover kills `messor recover` with SIGKILL at seeded moments
// spread over its run (while it verifies objects, builds the new index,
// puts it in place), at least 20 times, with the index damaged before
// about half of the runs. After each kill a plain pickup runs (it must
// refuse or work, never clean up), then, if the index is still damaged, a
// recover to the end; the invariant holds after each, dropoffs run now and
// then, and at the end every file is delivered intact.
func TestKilledRecover(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	e.Home.WriteHostsFile("alpha", "beta")
	const seed = 20261201
	r := rand.New(rand.NewSource(seed))
	batch := 0
	refill := func() {
		batch++
		files := smallTree(r, fmt.Sprintf("r%02d", batch), 8, 16<<10)
		for i := range 3 {
			files[fmt.Sprintf("r%02d/big%d.bin", batch, i)] = randBytes(r, 4<<20+r.Intn(4<<20))
		}
		e.send("alpha", "beta", files)
		if code, out := run(t, e.quickCLI("pickup")); code != 0 {
			t.Fatalf("messor pickup: exit %d\n%s", code, out)
		}
	}
	refill()
	refill()
	index := filepath.Join(e.Buf, "index.db")
	// Junk over both meta pages, junk further in, or no index at all.
	damage := func() {
		if r.Intn(3) == 0 {
			if err := os.Remove(index); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			return
		}
		f, err := os.OpenFile(index, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(randBytes(r, 8192), int64(r.Intn(2))*8192); err != nil {
			t.Fatal(err)
		}
	}
	openable := func() bool {
		b, err := carrier.OpenBufferReadOnly(e.Buf)
		if err != nil {
			if !errors.Is(err, carrier.ErrIndexCorrupt) {
				t.Fatalf("open buffer: %v", err)
			}
			return false
		}
		b.Close()
		return true
	}
	// How long a whole recover takes here (the shortest of three): the
	// kills are spread over it.
	span := time.Hour
	for range 3 {
		start := time.Now()
		if code, out := run(t, e.quickCLI("recover")); code != 0 {
			t.Fatalf("messor recover: exit %d\n%s", code, out)
		}
		span = min(span, time.Since(start))
	}
	t.Logf("a recover of %d MiB of objects takes about %v", objectBytes(e.Buf)>>20, span)

	landed, runs := 0, 0
	for ; landed < 20; runs++ {
		if runs >= 60 {
			t.Fatalf("only %d kills landed in %d runs", landed, runs)
		}
		if r.Intn(2) == 0 {
			damage()
		}
		killed, code, out := killCLI(t, e.quickCLI("recover"), time.Duration(r.Int63n(int64(span))))
		if killed {
			landed++
		} else if code != 0 {
			t.Fatalf("run %d: messor recover: exit %d\n%s", runs, code, out)
		}
		// The reported sequence: a plain run right after the killed
		// recover. It may refuse (the damaged index is still in place),
		// never clean up.
		if code, out := run(t, e.quickCLI("pickup")); code != 0 && !strings.Contains(out, "corrupt") {
			t.Fatalf("run %d: messor pickup after a killed recover: exit %d\n%s", runs, code, out)
		}
		if !openable() {
			if code, out := run(t, e.quickCLI("recover")); code != 0 {
				t.Fatalf("run %d: messor recover: exit %d\n%s", runs, code, out)
			}
		}
		e.world.Check(t, nil)
		if runs%5 == 4 {
			if code, out := run(t, e.quickCLI("dropoff")); code != 0 {
				t.Fatalf("run %d: messor dropoff: exit %d\n%s", runs, code, out)
			}
			e.world.Check(t, nil)
			if e.settled(t) {
				refill()
			}
		}
	}
	t.Logf("seed %d: %d kills landed in %d runs of recover, %d batches", seed, landed, runs, batch)
	for i := 0; !e.settled(t); i++ {
		if i == 4 {
			t.Fatal("not settled after 4 runs without kills")
		}
		for _, verb := range []string{"pickup", "dropoff"} {
			if code, out := run(t, e.quickCLI(verb)); code != 0 {
				t.Fatalf("messor %s: exit %d\n%s", verb, code, out)
			}
		}
	}
	e.world.CheckSettled(t, nil)
}

// quickCLI is cli without listening for agents over mDNS (2 s a run).
func (e *env) quickCLI(verb string) *exec.Cmd {
	cmd := e.cli(verb)
	cmd.Env = append(cmd.Env, "MESSOR_NO_MDNS=1")
	return cmd
}

// run runs cmd to the end and returns its exit code and output.
func run(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("%s: %v", cmd.Args, err)
	}
	return 0, out.String()
}

// killCLI starts cmd and kills it with SIGKILL after d. It reports
// whether cmd was still running then; if not, its exit code and output.
func killCLI(t *testing.T, cmd *exec.Cmd, d time.Duration) (killed bool, code int, out string) {
	t.Helper()
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return false, ee.ExitCode(), buf.String()
		}
		if err != nil {
			t.Fatalf("%s: %v", cmd.Args, err)
		}
		return false, 0, buf.String()
	case <-time.After(d):
		cmd.Process.Signal(syscall.SIGKILL)
		return <-exited != nil, 0, ""
	}
}

// objectBytes is what the buffer's objects hold.
func objectBytes(buf string) int64 {
	var n int64
	filepath.WalkDir(filepath.Join(buf, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if i, err := d.Info(); err == nil {
				n += i.Size()
			}
		}
		return nil
	})
	return n
}
