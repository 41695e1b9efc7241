package faults

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/flaky"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// TestKillDuringResume kills `messor pickup` (SIGKILL) at two points of a
// resumed download: on a host that hashes, while the host hashes the whole
// file once the rest was read (the host's hash command signals it); on a
// host that cannot hash, while the source is read whole again, just after
// the partial (another version's past its first MiB) was cut where it
// differs and rewritten from there. After each kill nothing is lost, the
// partial holds only the source's bytes, and the next runs finish.
func TestKillDuringResume(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	const size = 8<<20 + 5
	for _, tc := range []struct {
		name   string
		noExec bool
	}{{"DuringWholeFileHash", false}, {"AfterPartialCut", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			flag := filepath.Join(t.TempDir(), "hold")
			// The whole-file hash (head -c size) waits while flag exists,
			// having removed it: the test kills the carrier then. head
			// is wrapped on the login PATH, since the carrier's commands
			// reach the host on a helper shell's input, not as the
			// session's command.
			wrap := t.TempDir()
			realHead, err := exec.LookPath("head")
			if err != nil {
				t.Fatal(err)
			}
			script := "#!/bin/sh\ncase \"$*\" in *\"-c " + strconv.Itoa(size) + "\"*) if [ -e " + flag + " ]; then rm " + flag + "; sleep 5; fi;; esac\nexec " + realHead + " \"$@\"\n"
			if err := os.WriteFile(filepath.Join(wrap, "head"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			login := "PATH=" + wrap + ":$PATH; export PATH"
			start := func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
				opts := sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, NoExec: tc.noExec}
				if !tc.noExec {
					opts.LoginScript = login
				}
				s := sshdtest.Start(t, opts)
				return linkHost{s: s, p: flaky.New(t, s.Addr)}
			}
			e := &env{Env: conformance.NewEnv(t, start, "alpha", "beta")}
			e.world = NewWorld(e.Dirs, e.Buf)
			e.Home.WriteHostsFile("alpha")
			src := randBytes(rand.New(rand.NewSource(9)), size)
			e.send("alpha", "beta", map[string][]byte{"img/disk.img": src})
			p := e.proxy("alpha")
			p.CutAfter(2 << 20)
			e.runCLI(t, "pickup")
			p.CutAfter(0)
			parts, _ := filepath.Glob(filepath.Join(e.Buf, "partial", "*"))
			if len(parts) != 1 {
				t.Fatalf("%d partials after the cut pickup, want 1", len(parts))
			}
			partial := parts[0]

			var ready func() bool
			if tc.noExec {
				old, err := os.ReadFile(partial)
				if err != nil {
					t.Fatal(err)
				}
				rand.New(rand.NewSource(10)).Read(old[1<<20:])
				if err := os.WriteFile(partial, old, 0o600); err != nil {
					t.Fatal(err)
				}
				p.SetRate(4 << 20)
				ready = func() bool { // rewritten past the cut
					b, _ := os.ReadFile(partial)
					return len(b) > 1<<20+64<<10 && bytes.Equal(b[1<<20:1<<20+64<<10], src[1<<20:1<<20+64<<10])
				}
			} else {
				if err := os.WriteFile(flag, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				ready = func() bool { _, err := os.Stat(flag); return err != nil }
			}
			cmd, out, exited := e.startCLI(t, "pickup")
			deadline := time.After(60 * time.Second)
		wait:
			for !ready() {
				select {
				case err := <-exited:
					t.Fatalf("pickup ended before the kill (%v):\n%s", err, out.String())
				case <-deadline:
					cmd.Process.Kill()
					t.Fatal("the kill point was never reached")
				case <-time.After(2 * time.Millisecond):
					continue wait
				}
			}
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			p.SetRate(0)
			e.world.Check(t, nil)
			b, err := os.ReadFile(partial)
			if err != nil {
				t.Fatalf("the partial is gone after the kill: %v", err)
			}
			if n := commonPrefix(b, src); n != len(b) {
				t.Fatalf("after the kill the partial (%d bytes) differs from the source at byte %d", len(b), n)
			}
			for _, verb := range []string{"pickup", "dropoff"} {
				if code, out := e.runCLI(t, verb); code != 0 {
					t.Fatalf("messor %s: exit %d\n%s", verb, code, out)
				}
			}
			e.world.CheckSettled(t, nil)
			if got, _ := os.ReadFile(filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "img", "disk.img")); !bytes.Equal(got, src) {
				t.Fatal("delivered file differs from the source")
			}
		})
	}
}
