package faults

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// sessionHost is a real sshd with a limit on sessions per connection.
type sessionHost struct{ s *sshdtest.Server }

func (h sessionHost) Addr() (string, int)    { return h.s.Host, h.s.Port }
func (h sessionHost) KnownHostsLine() string { return h.s.KnownHostsLine() }
func (h sessionHost) Stop()                  { h.s.Stop() }

// A carrier spreads many files over several SFTP channels (lanes) of one
// connection. A host whose sshd allows fewer sessions (MaxSessions 1: not
// even one more channel, nor a command for hashing) refuses the extra
// ones: the carrier goes on with what it has, and everything arrives.
func TestFewSessionsAllowed(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, max := range []int{1, 2, 5, 0} {
		t.Run(fmt.Sprintf("MaxSessions=%d", max), func(t *testing.T) {
			t.Parallel() // each with its own hosts
			var servers []*sshdtest.Server
			start := func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
				s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, MaxSessions: max})
				servers = append(servers, s)
				return sessionHost{s}
			}
			e := &env{Env: conformance.NewEnv(t, start, "alpha", "beta")}
			e.world = NewWorld(e.Dirs, e.Buf)
			// Four big files hashed on the host at once (a command each,
			// beside the lanes: more sessions than MaxSessions 5 allows),
			// and many small ones.
			r := rand.New(rand.NewSource(7))
			files := map[string][]byte{}
			for i := range 4 {
				files[fmt.Sprintf("big/movie%d.bin", i)] = randBytes(r, 3<<19)
			}
			for i := range 150 {
				files[fmt.Sprintf("notes/d%d/n%03d.txt", i%7, i)] = []byte(fmt.Sprintf("note %d\n", i))
			}
			e.send("alpha", "beta", files)
			c := e.carrier(1<<30, carrier.Options{})
			conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			conformance.MustOK(t, e.Dropoff(c, "beta"))
			e.world.CheckSettled(t, c.Buffer())
			for i, s := range servers {
				n := strings.Count(s.Log(), "Starting session: subsystem 'sftp'")
				t.Logf("host %d: %d SFTP channels", i, n)
				if max == 0 && n < 2 {
					// alpha is picked up from, beta dropped off to
					t.Errorf("host %d: %d SFTP channels for 151 files, want several", i, n)
				}
				if max > 0 && n > max {
					t.Errorf("host %d: %d SFTP channels with MaxSessions %d", i, n, max)
				}
			}
		})
	}
}

// Found in review: on a host whose sshd allows 4 sessions, a run of 64+
// files opened 4 SFTP channels, so every command was refused, and a big
// file with a partial from an earlier visit failed on every such run. Now
// lanes leave a session for commands, and a refused resume check reads the
// prefix back.
func TestResumeOnHostWithFewSessions(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	start := func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		return sessionHost{s: sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, MaxSessions: 4})}
	}
	e := &env{Env: conformance.NewEnv(t, start, "alpha", "beta")}
	e.world = NewWorld(e.Dirs, e.Buf)
	r := rand.New(rand.NewSource(7))
	big := randBytes(r, 3<<20)
	files := map[string][]byte{"big/movie.bin": big}
	for i := range 150 {
		files[fmt.Sprintf("notes/d%d/n%03d.txt", i%7, i)] = []byte(fmt.Sprintf("note %d\n", i))
	}
	e.send("alpha", "beta", files)
	c := e.carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	// An earlier, interrupted visit left the first MiB on beta.
	sum := sha256.Sum256(big)
	dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(path.Join(protocol.InboxDir("alpha"), "big")))
	os.MkdirAll(dir, 0o755)
	part := filepath.Join(dir, protocol.PartialName("big/movie.bin", hex.EncodeToString(sum[:]), c.Buffer().ID()))
	if err := os.WriteFile(part, big[:1<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	for visit := 1; visit <= 3; visit++ {
		rs := e.Dropoff(c, "beta")
		for _, rep := range rs {
			if len(rep.Failed) > 0 || rep.Err != nil {
				t.Errorf("visit %d: err=%v failed=%v", visit, rep.Err, rep.Failed)
			}
		}
	}
}
