package faults

import (
	"fmt"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// TestKilledSettlingPlacing: a dropoff (host without exec) is killed just
// before the host gets the rename of a big file's partial: the partial and
// its note stay. That file is dropped from the buffer, another is picked
// up for the host, and the dropoff that settles the note at its start is
// killed (SIGKILL) at its removal of the partial, before the host gets it
// and after. The next dropoff delivers the other file, leaves no note and
// no partial, and never touches the dropped file's inbox.
func TestKilledSettlingPlacing(t *testing.T) {
	t.Parallel()
	for _, cut := range []bool{true, false} {
		t.Run(fmt.Sprintf("cut=%v", cut), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var beta string
			phase := 0 // 0: kill at the rename; 1: at the removal of the partial
			k := &claimKiller{match: func(r sftptest.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				if beta == "" || !strings.HasPrefix(r.Path, protocol.Inbox+"/") || !strings.HasPrefix(path.Base(r.Path), protocol.PartialPrefix) {
					return false
				}
				if phase == 0 {
					return r.Type == sftptest.FxpRename
				}
				return r.Type == sftptest.FxpRemove
			}}
			e := &env{Env: conformance.NewEnv(t, relayedNoExecSSHD(k.see), "alpha", "beta")}
			e.world = NewWorld(e.Dirs, e.Buf)
			e.Home.WriteHostsFile("alpha")
			mu.Lock()
			beta = e.Dirs["beta"]
			mu.Unlock()
			r := rand.New(rand.NewSource(5))
			e.Outbox("alpha", "beta", map[string][]byte{"p/big.bin": randBytes(r, 1<<20)})
			if code, out := e.runCLI(t, "pickup"); code != 0 {
				t.Fatalf("messor pickup: exit %d\n%s", code, out)
			}
			if landed, _ := e.runKilled(t, k, "dropoff", 1, true); landed == "" {
				t.Fatal("the dropoff was not killed at the rename")
			}
			partials, _ := filepath.Glob(filepath.Join(beta, filepath.FromSlash(protocol.InboxDir("alpha")), "p", protocol.PartialPrefix+"*"))
			if len(partials) != 1 || len(placingNotesIn(t, e.Buf)) != 1 {
				t.Fatalf("after the kill: partials %q, notes %q", partials, placingNotesIn(t, e.Buf))
			}
			if code, out := run(t, e.cli("drop", "beta", "--yes")); code != 0 {
				t.Fatalf("messor drop: exit %d\n%s", code, out)
			}
			e.send("alpha", "beta", map[string][]byte{"q/other.txt": []byte("other\n")})
			if code, out := e.runCLI(t, "pickup"); code != 0 {
				t.Fatalf("messor pickup: exit %d\n%s", code, out)
			}
			mu.Lock()
			phase = 1
			mu.Unlock()
			if landed, _ := e.runKilled(t, k, "dropoff", 1, cut); landed == "" {
				t.Fatal("the dropoff was not killed at the removal of the partial")
			}
			e.world.Check(t, nil)
			if code, out := e.runCLI(t, "dropoff"); code != 0 {
				t.Fatalf("messor dropoff: exit %d\n%s", code, out)
			}
			if n := placingNotesIn(t, e.Buf); len(n) > 0 {
				t.Errorf("notes left: %q", n)
			}
			if _, err := os.Lstat(partials[0]); !os.IsNotExist(err) {
				t.Errorf("the dropped file's partial: %v, want it removed", err)
			}
			e.finish(t)
		})
	}
}
