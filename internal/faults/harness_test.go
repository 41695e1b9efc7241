package faults

import (
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/flaky"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// messorBin is the CLI built once for the whole package.
var messorBin string

func TestMain(m *testing.M) {
	conformance.RunMostlyWaiting()
	dir, err := os.MkdirTemp("", "messor-faults-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	messorBin = filepath.Join(dir, "messor")
	build := exec.Command("go", "build", "-o", messorBin, "github.com/messor-sync/messor/cmd/messor")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: building cmd/messor:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// linkHost is a real sshd reached through a flaky proxy: the carrier's
// ~/.ssh/config points at the proxy, and the host key is trusted under the
// proxy's address.
type linkHost struct {
	s *sshdtest.Server
	p *flaky.Proxy
}

func (h linkHost) Addr() (string, int) { return "127.0.0.1", h.p.Port() }
func (h linkHost) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(h.p.Addr())}, h.s.HostKey)
}
func (h linkHost) Stop()              { h.s.Stop() }
func (h linkHost) link() *flaky.Proxy { return h.p }

// linkedAgent is a messor agent reached through a flaky proxy.
type linkedAgent struct {
	a conformance.Host
	p *flaky.Proxy
}

func (h linkedAgent) Addr() (string, int) { return "127.0.0.1", h.p.Port() }
func (h linkedAgent) KnownHostsLine() string {
	// The agent's line, for the proxy's address.
	f := strings.Fields(h.a.KnownHostsLine())
	return knownhosts.Normalize(h.p.Addr()) + " " + strings.Join(f[1:], " ")
}
func (h linkedAgent) Stop()              { h.a.Stop() }
func (h linkedAgent) link() *flaky.Proxy { return h.p }

func startLinkedAgent(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
	a := conformance.Agent(t, dir, keys)
	host, port := a.Addr()
	return linkedAgent{a: a, p: flaky.New(t, net.JoinHostPort(host, strconv.Itoa(port)))}
}

func startLinked(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
	requireRoot(t)
	s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys})
	return linkHost{s: s, p: flaky.New(t, s.Addr)}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("faults: these tests need root (sshd logs in as the test's user, tmpfs and bind mounts)")
	}
}

// env is a carrier HOME with hosts behind flaky links.
type env struct {
	*conformance.Env
	world *World
}

func newEnv(t *testing.T, names ...string) *env {
	e := &env{Env: conformance.NewEnv(t, startLinked, names...)}
	e.world = NewWorld(e.Dirs, e.Buf)
	return e
}

func (e *env) proxy(name string) *flaky.Proxy {
	return e.Hosts[name].(interface{ link() *flaky.Proxy }).link()
}

// send puts files into source's outbox for dest (mtimes in the past) and
// records them in the world.
func (e *env) send(source, dest string, files map[string][]byte) {
	e.Outbox(source, dest, files)
	e.world.Put(source, dest, files)
}

func (e *env) carrier(limit int64, opts carrier.Options) *carrier.Carrier {
	return e.Carrier(limit, opts)
}

// bounded runs f and fails the test if it has not returned after d: the
// carrier must give up on its own, never hang.
func bounded(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s still running after %v: hung", what, d)
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

// smallTree is n small files in a few directories.
func smallTree(r *rand.Rand, prefix string, n, maxSize int) map[string][]byte {
	out := map[string][]byte{}
	for i := 0; i < n; i++ {
		out[fmt.Sprintf("%s/%02d/f%04d.bin", prefix, i%7, i)] = randBytes(r, r.Intn(maxSize))
	}
	return out
}

func payload(files map[string][]byte) int64 {
	var n int64
	for _, b := range files {
		n += int64(len(b))
	}
	return n
}

func reportsErr(rs []*carrier.HostReport) error {
	for _, r := range rs {
		if r.Err != nil {
			return r.Err
		}
		if len(r.Failed) > 0 {
			return fmt.Errorf("%s: %v", r.Summary(), r.Failed)
		}
	}
	return nil
}

var _ = context.Background
