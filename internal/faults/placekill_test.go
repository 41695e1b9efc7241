package faults

import (
	"fmt"
	"io/fs"
	"math/rand"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// relayedNoExecSSHD starts sshd hosts without exec (internal-sftp only)
// behind relays that show every SFTP request to hook.
func relayedNoExecSSHD(hook sftptest.Hook) conformance.StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		requireRoot(t)
		signer, _ := sshdtest.NewKey(t)
		s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: append(keys, signer.PublicKey()), NoExec: true})
		return sftptest.StartRelay(t, keys, net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), "root", signer, hook)
	}
}

// placingNotesIn lists what the notes of partials being placed in the
// buffer dir say.
func placingNotesIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	top := filepath.Join(dir, "placing")
	err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out = append(out, string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestKilledPlacing kills the real `messor dropoff` (SIGKILL) at the
// rename that puts a big file's partial in place on a host without exec:
// before the host gets it (the carrier died after noting that it was
// placing the partial, before the round trip), and just after it was
// passed on (the host places it for a carrier that is dead). Either way
// the note is in the buffer after the kill, the next runs deliver every
// file once, intact, and no note is left.
func TestKilledPlacing(t *testing.T) {
	t.Parallel()
	for _, cut := range []bool{true, false} {
		t.Run(fmt.Sprintf("cut=%v", cut), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var beta string    // beta's login directory
			var placing string // the partial the kill landed at
			k := &claimKiller{match: func(r sftptest.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				ok := r.Type == sftptest.FxpRename && strings.HasPrefix(r.Path, protocol.Inbox+"/") &&
					!strings.Contains(r.Path, protocol.ReceiptsDirName) && strings.HasPrefix(path.Base(r.Path), protocol.PartialPrefix)
				if !ok || beta == "" {
					return false
				}
				// A big file's (a small file's partial is never resumed).
				if st, err := os.Lstat(filepath.Join(beta, filepath.FromSlash(r.Path))); err != nil || st.Size() <= 256<<10 {
					return false
				}
				placing = r.Path
				return true
			}}
			e := &env{Env: conformance.NewEnv(t, relayedNoExecSSHD(k.see), "alpha", "beta")}
			mu.Lock()
			beta = e.Dirs["beta"]
			mu.Unlock()
			e.world = NewWorld(e.Dirs, e.Buf)
			e.Home.WriteHostsFile("alpha")
			r := rand.New(rand.NewSource(18))
			e.send("alpha", "beta", map[string][]byte{"p/big.bin": randBytes(r, 2<<20), "p/small.txt": []byte("small\n")})
			if code, out := e.runCLI(t, "pickup"); code != 0 {
				t.Fatalf("messor pickup: exit %d\n%s", code, out)
			}
			if landed, _ := e.runKilled(t, k, "dropoff", 1, cut); landed == "" {
				t.Fatal("the dropoff was not killed at the rename of a partial")
			}
			e.world.Check(t, nil)
			mu.Lock()
			p := placing
			mu.Unlock()
			found := false
			for _, n := range placingNotesIn(t, e.Buf) {
				found = found || strings.Contains(n, "\npartial "+p+"\n")
			}
			if !found {
				t.Errorf("killed at the rename of %s: no note that it was being placed", p)
			}
			// Cut, the partial is there for the next visit to find under
			// its note. Passed on, the host may or may not have renamed
			// it: the relay drops the carrier's connection to the host
			// as soon as the carrier's own is gone.
			if _, err := os.Lstat(filepath.Join(e.Dirs["beta"], filepath.FromSlash(p))); cut && err != nil {
				t.Errorf("killed before the rename of %s reached the host: the partial: %v", p, err)
			}
			e.finish(t)
			if n := placingNotesIn(t, e.Buf); len(n) > 0 {
				t.Errorf("notes left after the next runs: %q", n)
			}
		})
	}
}
