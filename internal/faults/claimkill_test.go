package faults

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// claimKiller is a hook on a relay in front of a host: it SIGKILLs the
// process set with arm at the n-th SFTP request that names a claim, either
// before the request reaches the host (cut) or after it was passed on (so
// the host carries it out for a carrier that is dead).
type claimKiller struct {
	mu     sync.Mutex
	proc   *os.Process
	n, at  int
	cut    bool
	landed string // the request killed at
	// match picks the requests counted (nil: those naming a claim).
	match func(sftptest.Request) bool
}

func (k *claimKiller) arm(p *os.Process, at int, cut bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.proc, k.n, k.at, k.cut, k.landed = p, 0, at, cut, ""
}

// disarm stops killing and returns the request killed at ("" if none).
func (k *claimKiller) disarm() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.proc = nil
	return k.landed
}

func (k *claimKiller) see(r sftptest.Request) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	counted := strings.HasPrefix(path.Base(r.Path), protocol.ClaimPrefix) || strings.HasPrefix(path.Base(r.Target), protocol.ClaimPrefix)
	if k.match != nil {
		counted = k.match(r)
	}
	if k.proc == nil || !counted {
		return false
	}
	if k.n++; k.n != k.at {
		return false
	}
	k.proc.Signal(os.Kill)
	k.landed = fmt.Sprintf("type %d %s -> %s", r.Type, path.Base(r.Path), path.Base(r.Target))
	return k.cut
}

// TestKilledAtClaim kills the real `messor pickup` at each request of the
// claim protocol in turn (renaming to the claim, looking at it, removing
// it), just before the host gets the request, and just after it with a
// dropoff between the kill and the next pickup, then lets later runs
// finish: every file is delivered once under its own name
// (unicode, and too long for a claim name), nothing is lost, and
// no claim is left in the outbox.
func TestKilledAtClaim(t *testing.T) {
	t.Parallel()
	k := &claimKiller{}
	e := &env{Env: conformance.NewEnv(t, relayedSSHD(k.see), "alpha", "beta")}
	e.world = NewWorld(e.Dirs, e.Buf)
	e.Home.WriteHostsFile("alpha")
	r := rand.New(rand.NewSource(7))
	batch := 0
	for _, mode := range []struct{ cut, deliverFirst bool }{{true, false}, {false, true}} {
		cut, deliverFirst := mode.cut, mode.deliverFirst
		for at := 1; ; at++ {
			batch++
			b := fmt.Sprintf("b%02d", batch)
			e.send("alpha", "beta", map[string][]byte{
				b + "/" + strings.Repeat("lång namn ", 21) + ".txt": randBytes(r, 2000),
				b + "/ünïcødé ☃.bin":                                randBytes(r, 300<<10),
			})
			cmd := e.cli("pickup")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			k.arm(cmd.Process, at, cut)
			err := cmd.Wait()
			landed := k.disarm()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			e.world.Check(t, nil)
			if landed == "" && err != nil {
				t.Fatalf("pickup failed without a kill:\n%s", out.Bytes())
			}
			if deliverFirst {
				e.runCLI(t, "dropoff")
				e.world.Check(t, nil)
			}
			for i := 0; !e.settled(t); i++ {
				if i == 3 {
					t.Fatalf("killed at claim request %d (%s, cut %v): not settled after 3 runs", at, landed, cut)
				}
				for _, verb := range []string{"pickup", "dropoff"} {
					if code, out := e.runCLI(t, verb); code != 0 {
						t.Fatalf("killed at claim request %d (%s): then messor %s: exit %d\n%s", at, landed, verb, code, out)
					}
				}
			}
			if code, out := e.runCLI(t, "dropoff"); code != 0 {
				t.Fatalf("messor dropoff: exit %d\n%s", code, out)
			}
			if !t.Run(fmt.Sprintf("deliver first %v, cut %v, at %d", deliverFirst, cut, at), func(t *testing.T) {
				t.Logf("killed at %q", landed)
				e.world.CheckSettled(t, nil)
			}) {
				t.FailNow()
			}
			if landed == "" {
				break // the run ended before the at-th claim request
			}
		}
	}
}
