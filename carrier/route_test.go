package carrier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// routeHosts starts a jump sshd (forwarding allowed) and a target sshd on
// loopback, both taking key.
func routeHosts(t *testing.T, key ssh.Signer) (jump, target *sshdtest.Server) {
	t.Helper()
	jump = sshdtest.Start(t, sshdtest.Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, AllowTcpForwarding: true})
	target = sshdtest.Start(t, sshdtest.Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	return jump, target
}

func hostOf(name string, s *sshdtest.Server, keyFile string) discovery.Host {
	return discovery.Host{Name: name, HostName: s.Host, Port: s.Port, User: "root", IdentityFiles: []string{keyFile}}
}

func keyFile(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	signer, pem := sshdtest.NewKey(t)
	f := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(f, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return signer, f
}

// dialOrHang runs dial and fails the test if it has not returned within
// a minute (the bounds under test are a second or less).
func dialOrHang(t *testing.T, f func() (*Session, error)) (*Session, error) {
	t.Helper()
	type res struct {
		s   *Session
		err error
	}
	done := make(chan res, 1)
	go func() { s, err := f(); done <- res{s, err} }()
	select {
	case r := <-done:
		return r.s, r.err
	case <-time.After(time.Minute):
		t.Fatal("dial through the route still blocked after a minute")
		return nil, nil
	}
}

// silentListener accepts connections and never says a word: a target whose
// sshd hangs, behind a jump host.
func silentListener(t *testing.T) *net.TCPAddr { return serveLoopback(t, nil) }

// serveLoopback listens on loopback and runs serve, if set, on each
// connection; they are closed when the test ends.
func serveLoopback(t *testing.T, serve func(net.Conn)) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			if serve != nil {
				go serve(c)
			}
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// TestJumpChainBounded: the connect timeout and the context bound the whole
// chain, also the handshake with a target that never answers through the
// jump host's channel (which takes no deadline of its own); the jump host
// saw the login.
func TestJumpChainBounded(t *testing.T) {
	signer, kf := keyFile(t)
	jump, _ := routeHosts(t, signer)
	silent := silentListener(t)
	h := discovery.Host{Name: "hung", HostName: "127.0.0.1", Port: silent.Port, User: "root", ProxyJump: []discovery.Host{hostOf("jump", jump, kf)}}
	wantBounded(t, h, signer, "a target that never answers")
	// Under load the jump host's login alone can outlast wantBounded's
	// short bounds; a longer bound must then reach past it, and still end.
	for _, d := range []time.Duration{2 * time.Second, 8 * time.Second} {
		if strings.Contains(jump.Log(), "Accepted publickey for root") {
			break
		}
		insecure := func(discovery.Host) ssh.HostKeyCallback { return ssh.InsecureIgnoreHostKey() }
		signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
		var ue *UnreachableError
		if _, err := dialOrHang(t, func() (*Session, error) {
			return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), insecure, signers, d, nil)
		}); !errors.As(err, &ue) {
			t.Errorf("a target that never answers, timeout %v: %v, want an UnreachableError", d, err)
		}
	}
	if !strings.Contains(jump.Log(), "Accepted publickey for root") {
		t.Errorf("the jump host saw no login:\n%s", jump.Log())
	}
}

// TestJumpClosedWithSession: a session through a jump host works, and
// closing it closes the jump host's connection too. An unknown jump key is
// refused naming the jump host; with accept-new it is pinned in the jump
// host's known_hosts file.
func TestJumpClosedWithSession(t *testing.T) {
	signer, kf := keyFile(t)
	jump, target := routeHosts(t, signer)
	jh := hostOf("jump", jump, kf)
	jh.KnownHostsFiles = []string{filepath.Join(t.TempDir(), "known_hosts")}
	h := hostOf("target", target, kf)
	h.ProxyJump = []discovery.Host{jh}
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }

	_, err := dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, signers, 5*time.Second, nil)
	})
	var uk *UnknownHostKeyError
	if !errors.As(err, &uk) || uk.Host != "jump" || uk.Fingerprint != ssh.FingerprintSHA256(jump.HostKey) {
		t.Fatalf("unknown jump key: %v, want an UnknownHostKeyError for jump", err)
	}
	acceptNew := func(hop discovery.Host) ssh.HostKeyCallback { return HostKeyPolicy(hop, true) }
	s, err := dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), acceptNew, signers, 5*time.Second, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(jh.KnownHostsFiles[0]); !strings.Contains(string(b), jump.Host) {
		t.Errorf("accept-new did not pin the jump host's key: %q", b)
	}
	if _, err := s.sftp.Getwd(); err != nil {
		t.Fatalf("SFTP through the jump host: %v", err)
	}
	rc := s.conn.Conn.(*routeConn)
	s.Close()
	waited := make(chan error, 1)
	go func() { waited <- rc.clients[0].Wait() }()
	select {
	case <-waited:
	case <-time.After(time.Minute):
		t.Fatal("the jump host's connection is still open after the session closed")
	}
}

// TestProxyCommand: the command's stdin/stdout carry the session (here
// OpenSSH's ssh -W through a jump host), and it is killed when the session
// closes. A command that ends says what it wrote to stderr; one the shell
// cannot run is not taken for a host out of reach.
func TestProxyCommand(t *testing.T) {
	signer, kf := keyFile(t)
	jump, target := routeHosts(t, signer)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte(jump.KnownHostsLine()+"\n"), 0o600)
	h := hostOf("target", target, kf)
	h.ProxyCommand = fmt.Sprintf("ssh -F /dev/null -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -p %d -W %%h:%%p root@%s", kf, kh, jump.Port, jump.Host)
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
	s, err := dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, signers, 10*time.Second, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.sftp.Getwd(); err != nil {
		t.Fatalf("SFTP through the ProxyCommand: %v", err)
	}
	pc := s.conn.Conn.(*routeConn).base.(*cmdConn)
	pid := pc.cmd.Process.Pid
	s.Close()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("ProxyCommand (pid %d) still there after the session closed: %v", pid, err)
	}

	h.ProxyCommand = `sh -c 'echo the proxy says no >&2; exit 3'`
	_, err = dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, signers, 10*time.Second, nil)
	})
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "the proxy says no") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("a ProxyCommand that exits 3: %v, want unreachable, with its stderr and status", err)
	}
	h.ProxyCommand = "sleep 600" // never says a word
	_, err = dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, signers, 300*time.Millisecond, nil)
	})
	if !errors.As(err, &ue) {
		t.Errorf("a silent ProxyCommand: %v, want unreachable within the connect timeout", err)
	}
	h.ProxyCommand = "/nonexistent/proxy %h"
	_, err = dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, signers, 10*time.Second, nil)
	})
	var pe *ProxyCommandError
	if !errors.As(err, &pe) || errors.As(err, &ue) {
		t.Errorf("a ProxyCommand that cannot run: %v, want a ProxyCommandError, not unreachable", err)
	}
}

// TestReachableFollowsRoute: watch's probe of a host behind a jump host
// probes the first jump host (the host itself may be reachable only from
// there); a ProxyCommand host counts as reachable.
func TestReachableFollowsRoute(t *testing.T) {
	open := silentListener(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr)
	ln.Close()
	hidden := discovery.Host{Name: "hidden", HostName: "127.0.0.1", Port: closed.Port}
	jump := discovery.Host{Name: "jump", HostName: "127.0.0.1", Port: open.Port}
	if probe(context.Background(), hidden, time.Second) == nil {
		t.Fatal("a closed port probed as reachable")
	}
	hidden.ProxyJump = []discovery.Host{jump}
	if probe(context.Background(), hidden, time.Second) != nil {
		t.Error("a host behind a reachable jump host probed as unreachable")
	}
	hidden.ProxyJump = []discovery.Host{{Name: "j", HostName: "127.0.0.1", Port: closed.Port}, jump}
	if probe(context.Background(), hidden, time.Second) == nil {
		t.Error("a host behind an unreachable first jump host probed as reachable")
	}
	hidden.ProxyJump, hidden.ProxyCommand = nil, "true"
	if probe(context.Background(), hidden, time.Second) != nil {
		t.Error("a ProxyCommand host probed as unreachable")
	}
}

// TestJumpChain: two jump hosts, as "ProxyJump a,b" and as b having its own
// "ProxyJump a": both reach the target, each jump host logging a login.
func TestJumpChain(t *testing.T) {
	signer, kf := keyFile(t)
	a, target := routeHosts(t, signer)
	b := sshdtest.Start(t, sshdtest.Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, AllowTcpForwarding: true})
	insecure := func(discovery.Host) ssh.HostKeyCallback { return ssh.InsecureIgnoreHostKey() }
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
	ha, hb := hostOf("a", a, kf), hostOf("b", b, kf)
	nested := hb
	nested.ProxyJump = []discovery.Host{ha}
	for i, route := range [][]discovery.Host{{ha, hb}, {nested}} {
		h := hostOf("target", target, kf)
		h.ProxyJump = route
		s, err := dialOrHang(t, func() (*Session, error) {
			return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), insecure, signers, 10*time.Second, nil)
		})
		if err != nil {
			t.Fatalf("route %d: %v", i, err)
		}
		if _, err := s.sftp.Getwd(); err != nil {
			t.Errorf("route %d: SFTP: %v", i, err)
		}
		if n := len(s.conn.Conn.(*routeConn).clients); n != 2 {
			t.Errorf("route %d: %d jump connections, want 2", i, n)
		}
		s.Close()
		for _, j := range []*sshdtest.Server{a, b} {
			if got := strings.Count(j.Log(), "Accepted publickey for root"); got != i+1 {
				t.Errorf("route %d: jump host %s logged %d logins, want %d:\n%s", i, j.Addr, got, i+1, j.Log())
			}
		}
	}
}

// TestRouteCloseBaseFirst: closing a routed connection closes the
// connection at the bottom first. Closing the channel above it sends a
// message on the jump host's connection, which on a stalled link would wait
// forever (behind an upload blocked on a full TCP buffer); with the bottom
// closed, it fails at once. The idle watch and Ctrl-C rely on this.
func TestRouteCloseBaseFirst(t *testing.T) {
	base := &fakeConn{closed: make(chan struct{})}
	ch := &stuckChannel{until: base.closed}
	rc := &routeConn{Conn: ch, base: base}
	done := make(chan struct{})
	go func() { rc.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Close waited on the channel before closing the connection under it")
	}
}

// fakeConn is a net.Conn that only records its Close.
type fakeConn struct {
	net.Conn
	closed chan struct{}
}

func (c *fakeConn) Close() error { close(c.closed); return nil }

// stuckChannel's Close waits until until is closed, as a channel's close
// message waits for a stalled connection.
type stuckChannel struct {
	net.Conn
	until chan struct{}
}

func (c *stuckChannel) Close() error { <-c.until; return nil }
