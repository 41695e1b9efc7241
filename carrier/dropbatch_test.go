package carrier_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// dropEnv is a carrier holding files picked up from alpha (a stock sshd)
// for beta, a stock sshd whose login runs login and whose sftp-server logs
// its requests; the carrier logs at debug.
type dropEnv struct {
	*conformance.Env
	beta *sshdtest.Server
	c    *carrier.Carrier
	log  *syncBuffer
}

func newDropEnv(t *testing.T, login string, files map[string][]byte) *dropEnv {
	t.Cleanup(carrier.SetBatchMin(batchMin))
	t.Cleanup(carrier.SetBatchCapsWait(time.Minute))
	de := &dropEnv{log: &syncBuffer{}}
	de.Env = conformance.NewEnv(t, conformance.SSHD(false), "alpha")
	de.Start = func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		de.beta = sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, SFTPLog: true, LoginScript: login})
		return batchHost{de.beta}
	}
	de.AddHost("beta", true)
	de.Outbox("alpha", "beta", files)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("carrier log:\n%s", de.log)
		}
	})
	de.c = de.Carrier(1<<30, carrier.Options{Logger: slog.New(slog.NewTextHandler(de.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	conformance.MustOK(t, de.c.Pickup(context.Background(), de.Resolve("alpha")))
	return de
}

// fsyncs and readBacks count the partials in beta's inbox from alpha that
// its sftp-server logged an fsync of, or a close after reading from.
var partialFsync = regexp.MustCompile(`fsync "messor/inbox/alpha/.*\.messor\.part\.`)

func (de *dropEnv) fsyncs() int {
	return len(partialFsync.FindAllString(de.beta.SFTPLog(), -1))
}

func (de *dropEnv) readBacks() int {
	n := 0
	for _, l := range strings.Split(de.beta.SFTPLog(), "\n") {
		if strings.Contains(l, `close "messor/inbox/alpha/`) && !strings.Contains(l, "bytes read 0 ") {
			n++
		}
	}
	return n
}

// dropFiles are small files under directory names a shell could take for
// something else.
func dropFiles(n int) map[string][]byte {
	dirs := []string{"a b", "-rf", "it's", "$(touch pwned)", "`id`", "*", "é😀", `"q"`}
	m := map[string][]byte{}
	for i := range n {
		m[fmt.Sprintf("%s/f%03d.txt", dirs[i%len(dirs)], i)] = bytes.Repeat([]byte{byte(i)}, 100+i*37)
	}
	m["empty"] = nil
	return m
}

// TestBatchDropoff: many small files to a stock host are proven in
// batches by the exec helper (hashed there): no partial is read back,
// each is fsynced once, every file arrives intact, and no name runs as a
// command.
func TestBatchDropoff(t *testing.T) {
	files := dropFiles(60)
	de := newDropEnv(t, "", files)
	conformance.MustOK(t, de.Dropoff(de.c, "beta"))
	conformance.SameTree(t, "inbox", de.Inbox("beta", "alpha"), files)
	if !strings.Contains(de.log.String(), `msg="batch verify"`) || strings.Contains(de.log.String(), "by itself") {
		t.Error("not every file was proven in a batch")
	}
	if n := de.fsyncs(); n != len(files) {
		t.Errorf("%d partials fsynced, want %d", n, len(files))
	}
	if n := de.readBacks(); n != 0 {
		t.Errorf("%d partials read back, want 0 (hashed in batches)", n)
	}
	if _, err := os.Stat(filepath.Join(de.Dirs["beta"], "pwned")); err == nil {
		t.Error("a name ran as a command")
	}
}

// TestBatchDropoffAltered: a partial changed on the host after it was
// written and before its batch hashed it is not put in place as it is:
// it is delivered by itself, intact.
func TestBatchDropoffAltered(t *testing.T) {
	files := dropFiles(30)
	de := newDropEnv(t, "", files)
	var mu sync.Mutex
	altered := 0
	carrier.SetSliceWritten(de.c, func(partial string, start, end int64) {
		mu.Lock()
		defer mu.Unlock()
		if altered < 3 && end > 0 {
			if err := os.WriteFile(filepath.Join(de.Dirs["beta"], partial), bytes.Repeat([]byte("X"), int(end)), 0o600); err != nil {
				t.Error(err)
			}
			altered++
		}
	})
	conformance.MustOK(t, de.Dropoff(de.c, "beta"))
	conformance.SameTree(t, "inbox", de.Inbox("beta", "alpha"), files)
	if altered != 3 {
		t.Fatalf("altered %d partials, want 3", altered)
	}
	if n := strings.Count(de.log.String(), "not proven in its batch"); n != 3 {
		t.Errorf("%d files delivered by themselves after their batch, want 3", n)
	}
}

// fakeTool writes a directory holding cmd, a script run with the real
// command as $REAL, and returns the login script putting it first in PATH.
func fakeTool(t *testing.T, cmd, script string) string {
	t.Helper()
	dir := t.TempDir()
	real := ""
	for _, d := range []string{"/usr/bin", "/bin"} {
		if _, err := os.Stat(filepath.Join(d, cmd)); err == nil && real == "" {
			real = filepath.Join(d, cmd)
		}
	}
	if real == "" {
		t.Fatalf("no %s on this machine", cmd)
	}
	if err := os.WriteFile(filepath.Join(dir, cmd), []byte("#!/bin/sh\nREAL="+real+"\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + dir + ":$PATH; export PATH"
}

// TestBatchDropoffHelperFails: a host whose batch command answers garbage,
// or whose helper dies in the middle of a batch: every
// file is still delivered intact (by itself where its batch did not prove
// it), and nothing stays behind in the buffer.
func TestBatchDropoffHelperFails(t *testing.T) {
	garbage := `if [ "$(cat | head -c 6)" = messor ]; then printf messor | $REAL "$@"; else echo 'this is not a digest'; fi`
	for _, tc := range []struct {
		name  string
		tools [][2]string // command, script
		want  string      // in the carrier's log; "": no file delivered by itself
	}{
		// No sha256sum -c; the probed tool answers garbage but for the
		// probe (6 bytes).
		{"garbage", [][2]string{{"sha256sum", `echo garbage; exit 1`}, {"openssl", garbage}}, "not proven in its batch"},
		// A sha256sum without -c: each partial is checked by itself,
		// and proven.
		{"no-check", [][2]string{{"sha256sum", `if [ "$1" = -c ]; then exit 1; fi; exec $REAL "$@"`}}, ""},
		{"helper-killed", [][2]string{{"chmod", `kill -9 $(ps -o ppid= -p $PPID); exit 1`}}, "exec helper gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var login []string
			for _, tl := range tc.tools {
				login = append(login, fakeTool(t, tl[0], tl[1]))
			}
			files := dropFiles(40)
			de := newDropEnv(t, strings.Join(login, "; "), files)
			conformance.MustOK(t, de.Dropoff(de.c, "beta"))
			conformance.SameTree(t, "inbox", de.Inbox("beta", "alpha"), files)
			if tc.want == "" && strings.Contains(de.log.String(), "by itself") {
				t.Error("a file was delivered by itself")
			}
			if !strings.Contains(de.log.String(), tc.want) {
				t.Errorf("the carrier's log says nothing of %q", tc.want)
			}
			if ents, err := de.c.Buffer().Entries(); err != nil || len(ents) != 0 {
				t.Errorf("left in the buffer: %d (%v)", len(ents), err)
			}
		})
	}
}

// TestSmallUnreadableLeavesNoPartial: a small file whose copy in the
// buffer cannot be read whole (cut short on the carrier's disk) fails, and
// leaves no partial of it on the host; the other files arrive. Written in
// batches (a stock host with an exec helper) and one by one (the agent).
func TestSmallUnreadableLeavesNoPartial(t *testing.T) {
	for _, name := range []string{"batched", "agent"} {
		t.Run(name, func(t *testing.T) {
			files := dropFiles(40)
			var e *conformance.Env
			var c *carrier.Carrier
			if name == "batched" {
				de := newDropEnv(t, "", files)
				e, c = de.Env, de.c
			} else {
				e = conformance.NewEnv(t, conformance.Agent, "alpha", "beta")
				e.Outbox("alpha", "beta", files)
				c = e.Carrier(1<<30, carrier.Options{})
				conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			}
			ents, err := c.Buffer().Entries()
			if err != nil {
				t.Fatal(err)
			}
			const bad = "a b/f008.txt"
			for _, en := range ents {
				if en.Path == bad {
					if err := os.Truncate(c.Buffer().ObjectPath(en.Hash), 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			rs := e.Dropoff(c, "beta")
			if len(rs) != 1 || len(rs[0].Failed) != 1 || rs[0].Failed[0].Path != "alpha/"+bad {
				t.Fatalf("dropoff: %s, failed %v; want %s failed alone", rs[0].Summary(), rs[0].Failed, bad)
			}
			inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.Inbox))
			filepath.WalkDir(inbox, func(p string, d fs.DirEntry, err error) error {
				if err == nil && strings.HasPrefix(d.Name(), protocol.ReservedPrefix+".part.") {
					t.Errorf("partial left on the host: %s", p)
				}
				return nil
			})
			delete(files, bad)
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
		})
	}
}
