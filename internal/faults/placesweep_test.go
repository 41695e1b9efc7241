package faults

import (
	"bytes"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// relayedGoSFTP starts pkg/sftp's server (no exec; it offers
// hardlink@openssh.com and is not OpenSSH's, so the carrier links, then
// removes the partial) behind relays that show every request to hook.
func relayedGoSFTP(hook sftptest.Hook) conformance.StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		signer, _ := sshdtest.NewKey(t)
		s := sftptest.Start(t, append(keys, signer.PublicKey()), "", func(ch ssh.Channel) {
			if srv, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir)); err == nil {
				srv.Serve()
			}
		})
		host, port := s.Addr()
		return sftptest.StartRelay(t, keys, net.JoinHostPort(host, strconv.Itoa(port)), "root", signer, hook)
	}
}

// TestKilledPlacingSweep kills the real `messor dropoff` (SIGKILL) at each
// request naming a path from the one that puts a big file's partial in
// place on (a rename, or a link) to the end of the visit, on hosts without
// exec: sshd with internal-sftp only, and pkg/sftp's server (link, then
// removal of the partial: two requests). Each kill lands before the
// request reaches the host, or just after it was passed on. After the
// kill the destination's user moves the file delivered (if it is there)
// out of the inbox and adds to it; the next runs must never write to it,
// must deliver the file (unless it was released before the kill), and
// must leave no placing note and no partial.
func TestKilledPlacingSweep(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, srv := range []struct {
		name  string
		start func(sftptest.Hook) conformance.StartFunc
	}{{"internal-sftp", relayedNoExecSSHD}, {"gosftp", relayedGoSFTP}} {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			for at := 1; ; at++ {
				landed := false
				for _, cut := range []bool{true, false} {
					ok := t.Run(fmt.Sprintf("at=%d/cut=%v", at, cut), func(t *testing.T) {
						landed = killPlacingAt(t, srv.start, at, cut) || landed
					})
					if !ok {
						return
					}
				}
				if !landed {
					return
				}
			}
		})
	}
}

// killPlacingAt is one kill of TestKilledPlacingSweep; it reports whether
// the kill landed (false: the visit had fewer requests).
func killPlacingAt(t *testing.T, start func(sftptest.Hook) conformance.StartFunc, at int, cut bool) bool {
	const rel = "p/big.bin"
	var mu sync.Mutex
	var beta string
	started := false // the big file's partial is being put in place
	k := &claimKiller{match: func(r sftptest.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if beta == "" || r.Path == "" && r.Extended == "" {
			return false
		}
		if !started {
			// The rename of the big file's partial (sshd), or the link
			// of it (hardlink@openssh.com names no path a relay shows:
			// the first one while the big partial is there).
			var p string
			switch {
			case r.Type == sftptest.FxpRename && strings.HasPrefix(path.Base(r.Path), protocol.PartialPrefix) && strings.HasPrefix(r.Path, protocol.Inbox+"/"):
				p = filepath.Join(beta, filepath.FromSlash(r.Path))
			case r.Extended == "hardlink@openssh.com":
				m, _ := filepath.Glob(filepath.Join(beta, filepath.FromSlash(protocol.InboxDir("alpha")), "p", protocol.PartialPrefix+"*"))
				if len(m) == 1 {
					p = m[0]
				}
			}
			if st, err := os.Lstat(p); p != "" && err == nil && st.Size() > 256<<10 {
				started = true
			}
		}
		return started
	}}
	// alpha, the source, on sshd (pkg/sftp's server shows the carrier
	// outbox files as changing while read); beta behind the relay.
	e := &env{Env: conformance.NewEnv(t, relayedNoExecSSHD(func(sftptest.Request) bool { return false }), "alpha")}
	e.Start = start(k.see)
	e.AddHost("beta", true)
	e.world = NewWorld(e.Dirs, e.Buf)
	e.Home.WriteHostsFile("alpha")
	mu.Lock()
	beta = e.Dirs["beta"]
	mu.Unlock()
	carried := randBytes(rand.New(rand.NewSource(int64(at))), 1<<20)
	e.send("alpha", "beta", map[string][]byte{rel: carried})
	if code, out := e.runCLI(t, "pickup"); code != 0 {
		t.Fatalf("messor pickup: exit %d\n%s", code, out)
	}
	landed, _ := e.runKilled(t, k, "dropoff", at, cut)
	if landed == "" {
		if at == 1 {
			t.Fatal("the dropoff was not killed: no placing of the big file's partial seen")
		}
		return false
	}
	t.Logf("killed at %s", landed)
	inbox := filepath.Join(beta, filepath.FromSlash(protocol.InboxDir("alpha")))
	final := filepath.Join(inbox, filepath.FromSlash(rel))
	moved := filepath.Join(beta, "kept elsewhere.bin")
	var edited []byte
	if _, err := os.Lstat(final); err == nil {
		if err := os.Rename(final, moved); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(moved, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		own := []byte("and the user's own words after it\n")
		if _, err := f.Write(own); err != nil {
			t.Fatal(err)
		}
		f.Close()
		edited = append(append([]byte{}, carried...), own...)
	}
	for i := 0; i < 3; i++ {
		if code, out := e.runCLI(t, "dropoff"); code != 0 {
			t.Fatalf("messor dropoff after the kill: exit %d\n%s", code, out)
		}
	}
	if edited != nil {
		if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, edited) {
			t.Fatalf("the moved file holds %d bytes (%v), want the %d its user left: written through", len(got), err, len(edited))
		}
	}
	if got, err := os.ReadFile(final); err == nil && !bytes.Equal(got, carried) {
		t.Errorf("%s holds %d bytes, not the carried content", rel, len(got))
	} else if err != nil && edited == nil {
		t.Errorf("%s not delivered: %v", rel, err)
	}
	if n := e.buffered(t); n != 0 {
		t.Errorf("%d file(s) still carried after the next runs", n)
	}
	if n := placingNotesIn(t, e.Buf); len(n) > 0 {
		t.Errorf("notes left after the next runs: %q", n)
	}
	filepath.WalkDir(inbox, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), protocol.PartialPrefix) {
			t.Errorf("a partial left in the inbox: %s", p)
		}
		return nil
	})
	return true
}
