package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

func TestAuth(t *testing.T) {
	e := newEnv(t)
	stranger := newSigner(t)
	conditional := newSigner(t)
	ca := newSigner(t)
	e.writeAuthorizedKeys(
		"# carriers\n" +
			string(ssh.MarshalAuthorizedKey(e.carrier.PublicKey())) +
			"from=\"10.0.0.0/8\" " + string(ssh.MarshalAuthorizedKey(conditional.PublicKey())) +
			"cert-authority " + string(ssh.MarshalAuthorizedKey(ca.PublicKey())) +
			"this line is garbage\n")
	e.start()

	t.Run("authorized key", func(t *testing.T) {
		e.dial().Close()
	})
	t.Run("unknown key refused", func(t *testing.T) {
		if c, err := e.dialWith(stranger); err == nil {
			c.Close()
			t.Fatal("login with an unknown key succeeded")
		}
		log := e.log.String()
		if !strings.Contains(log, "login refused") || !strings.Contains(log, "remote=127.0.0.1:") ||
			!strings.Contains(log, ssh.FingerprintSHA256(stranger.PublicKey())) {
			t.Errorf("refused login not logged with remote address and key:\n%s", log)
		}
	})
	t.Run("keys with unsupported options refused", func(t *testing.T) {
		for name, k := range map[string]ssh.Signer{"from=": conditional, "cert-authority": ca} {
			if c, err := e.dialWith(k); err == nil {
				c.Close()
				t.Errorf("login with a %s key succeeded", name)
			}
		}
	})
	t.Run("certificate of an authorized key refused", func(t *testing.T) {
		cert := &ssh.Certificate{
			Key:             e.carrier.PublicKey(),
			CertType:        ssh.UserCert,
			ValidPrincipals: []string{"carrier"},
			ValidBefore:     ssh.CertTimeInfinity,
		}
		if err := cert.SignCert(rand.Reader, ca); err != nil {
			t.Fatal(err)
		}
		cs, err := ssh.NewCertSigner(cert, e.carrier)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := e.dialWith(cs); err == nil {
			c.Close()
			t.Fatal("login with a certificate succeeded")
		}
	})
	t.Run("no password or keyboard-interactive", func(t *testing.T) {
		cfg := e.clientConfig(ssh.Password("secret"),
			ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
				return nil, nil
			}))
		if c, err := ssh.Dial("tcp", e.addr, cfg); err == nil {
			c.Close()
			t.Fatal("login without a key succeeded")
		}
	})
	t.Run("no authentication at all", func(t *testing.T) {
		if c, err := ssh.Dial("tcp", e.addr, e.clientConfig()); err == nil {
			c.Close()
			t.Fatal("login with no credentials succeeded")
		}
	})
	t.Run("authorized keys re-read at login", func(t *testing.T) {
		late := newSigner(t)
		if c, err := e.dialWith(late); err == nil {
			c.Close()
			t.Fatal("login before the key was added succeeded")
		}
		f, err := os.OpenFile(e.authKeys, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(ssh.MarshalAuthorizedKey(late.PublicKey()))
		f.Close()
		c, err := e.dialWith(late)
		if err != nil {
			t.Fatalf("login after the key was added: %v", err)
		}
		c.Close()
		os.Remove(e.authKeys)
		if c, err := e.dialWith(e.carrier); err == nil {
			c.Close()
			t.Fatal("login with the authorized keys file gone succeeded")
		}
		e.writeAuthorizedKeys(string(ssh.MarshalAuthorizedKey(e.carrier.PublicKey())))
	})
}

func TestNothingButSFTP(t *testing.T) {
	e := newEnv(t)
	e.start()
	conn := e.dial()

	newSession := func(t *testing.T) *ssh.Session {
		t.Helper()
		s, err := conn.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Run("exec", func(t *testing.T) {
		out, err := newSession(t).CombinedOutput("echo hi")
		if err == nil || strings.Contains(string(out), "hi") {
			t.Fatalf("exec ran: %q, %v", out, err)
		}
	})
	t.Run("shell", func(t *testing.T) {
		if err := newSession(t).Shell(); err == nil {
			t.Fatal("shell started")
		}
	})
	t.Run("pty", func(t *testing.T) {
		if err := newSession(t).RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
			t.Fatal("pty granted")
		}
	})
	t.Run("agent forwarding", func(t *testing.T) {
		ok, err := newSession(t).SendRequest("auth-agent-req@openssh.com", true, nil)
		if ok || err != nil {
			t.Fatalf("agent forwarding request: ok=%v err=%v", ok, err)
		}
	})
	t.Run("x11", func(t *testing.T) {
		ok, _ := newSession(t).SendRequest("x11-req", true, ssh.Marshal(struct {
			Single        bool
			Proto, Cookie string
			Screen        uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0}))
		if ok {
			t.Fatal("x11 forwarding granted")
		}
	})
	t.Run("other subsystem", func(t *testing.T) {
		if err := newSession(t).RequestSubsystem("netconf"); err == nil {
			t.Fatal("subsystem netconf started")
		}
	})
	t.Run("second request on an sftp session", func(t *testing.T) {
		s := newSession(t)
		if err := s.RequestSubsystem("sftp"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.SendRequest("exec", true, ssh.Marshal(struct{ Cmd string }{"id"})); ok {
			t.Fatal("exec accepted on an sftp session")
		}
	})
	t.Run("local forwarding", func(t *testing.T) {
		c, err := conn.Dial("tcp", e.addr)
		if err == nil {
			c.Close()
			t.Fatal("direct-tcpip accepted")
		}
	})
	t.Run("reverse forwarding", func(t *testing.T) {
		ln, err := conn.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			ln.Close()
			t.Fatal("tcpip-forward accepted")
		}
	})
	t.Run("unknown global request", func(t *testing.T) {
		if ok, _, _ := conn.SendRequest("no-such-request@messor", true, nil); ok {
			t.Fatal("unknown global request accepted")
		}
	})
	t.Run("sftp still works", func(t *testing.T) {
		c, err := sftp.NewClient(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Stat("messor/outbox"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestHostKey(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "new", "dir", "host_key")
	s1, err := LoadOrCreateHostKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if s1.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type %s", s1.PublicKey().Type())
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v", fi, err)
	}
	di, err := os.Stat(filepath.Dir(p))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("key directory mode: %v, %v", di, err)
	}
	data, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(data), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("key file is not OpenSSH PEM:\n%s", data)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("stray files beside the key: %v", entries)
	}
	s2, err := LoadOrCreateHostKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if ssh.FingerprintSHA256(s1.PublicKey()) != ssh.FingerprintSHA256(s2.PublicKey()) {
		t.Fatal("host key changed on reload")
	}

	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateHostKey(p); err == nil {
		t.Error("a world-readable host key was accepted")
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := LoadOrCreateHostKey(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("garbage key: %v", err)
	}
}

func TestHostKeyPersistsAcrossRestarts(t *testing.T) {
	e := newEnv(t)
	stop := e.start()
	fp1 := e.agent.Fingerprint()
	conn := e.dial()
	if got := ssh.FingerprintSHA256(e.agent.HostKey()); got != fp1 {
		t.Fatalf("HostKey and Fingerprint disagree: %s, %s", got, fp1)
	}
	conn.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.start()
	if e.agent.Fingerprint() != fp1 {
		t.Fatalf("fingerprint changed across restart: %s then %s", fp1, e.agent.Fingerprint())
	}
	// The client pinned the first key (FixedHostKey in clientConfig uses
	// the new agent's key, so pin the old one explicitly).
	cfg := e.clientConfig(ssh.PublicKeys(e.carrier))
	cfg.HostKeyCallback = func(_ string, _ net.Addr, key ssh.PublicKey) error {
		if ssh.FingerprintSHA256(key) != fp1 {
			return errors.New("host key changed")
		}
		return nil
	}
	c, err := ssh.Dial("tcp", e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if fi, err := os.Stat(e.hostKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key file: %v, %v", fi, err)
	}
}

func TestNewDefaultsAndChecks(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	a, err := New(Config{Name: "box"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Root() != filepath.Join(home, "messor") || a.Name() != "box" {
		t.Errorf("defaults: root %s name %s", a.Root(), a.Name())
	}
	for _, d := range []string{"messor/outbox", "messor/inbox"} {
		if fi, err := os.Stat(filepath.Join(home, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s not created: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(home, ".config", "messor", "agent_host_ed25519_key")); err != nil {
		t.Errorf("default host key: %v", err)
	}
	if _, err := New(Config{Name: "-bad name"}); err == nil {
		t.Error("bad name accepted")
	}
}

func TestHashRange(t *testing.T) {
	e, c, data := newHashEnv(t)
	part := "messor/inbox/src/" + protocol.PartialName("f", "00", "carrier")
	writeFile(t, c, part, data[:10])
	mustSymlink(t, "f", e.inRoot("inbox/src/inside-link"))
	conn := e.dial()

	ask := func(p string, n uint64) ([]byte, bool) {
		t.Helper()
		ok, reply, err := conn.SendRequest(protocol.HashRangeRequest, true,
			ssh.Marshal(&protocol.HashRangeMsg{Path: p, Length: n}))
		if err != nil {
			t.Fatalf("SendRequest: %v", err)
		}
		return reply, ok
	}
	for _, n := range []int{0, 1, 4096, len(data)} {
		for _, p := range []string{"messor/inbox/src/f", "/messor/inbox/src/f", "messor/inbox/src/inside-link"} {
			got, ok := ask(p, uint64(n))
			want := sha256.Sum256(data[:n])
			if !ok || string(got) != string(want[:]) {
				t.Errorf("hash of %d bytes of %s: ok=%v %x, want %x", n, p, ok, got, want)
			}
		}
	}
	if got, ok := ask(part, 10); !ok || len(got) != 32 {
		t.Errorf("partial refused: ok=%v", ok)
	}
	for _, tc := range []struct {
		p string
		n uint64
	}{
		{"messor/inbox/src/f", uint64(len(data)) + 1},
		{"messor/inbox/src/f", 1 << 63},
		{"messor/inbox/src/missing", 0},
		{"messor/inbox/src", 0},
		{"../../etc/passwd", 1},
		{"/etc/passwd", 1},
		{"messor/../../etc/passwd", 1},
		{e.outside + "/secret", 1},
		{"messor/inbox/src/link", 1},
		{"messor/inbox/src/.messor-other", 1},
		{"/", 0},
	} {
		if got, ok := ask(tc.p, tc.n); ok {
			t.Errorf("hash of %d bytes of %q: ok with %x", tc.n, tc.p, got)
		}
	}
	// A malformed payload is refused, and the connection lives on.
	if ok, _, err := conn.SendRequest(protocol.HashRangeRequest, true, []byte{1, 2}); ok || err != nil {
		t.Errorf("malformed request: ok=%v err=%v", ok, err)
	}
	if _, ok := ask("messor/inbox/src/f", 1); !ok {
		t.Error("connection broken after a malformed request")
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t)
	stop := e.start()
	var ad advert
	select {
	case ad = <-e.advertised:
	case <-time.After(5 * time.Second):
		t.Fatal("Advertise not called")
	}
	port := e.ln.Addr().(*net.TCPAddr).Port
	if ad.name != "testhost" || ad.port != port || ad.fingerprint != e.agent.Fingerprint() {
		t.Errorf("advertised %+v, want testhost port %d %s", ad, port, e.agent.Fingerprint())
	}

	// A carrier in the middle of an upload, and a connection that never
	// logs in: shutdown must not wait for either forever.
	c := e.sftp()
	f, err := c.Create("messor/outbox/busy")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	idle, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(start); d > shutdownGrace+2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	select {
	case <-e.stopped:
	default:
		t.Error("advert not stopped")
	}
	if _, err := c.Stat("messor/outbox"); err == nil {
		t.Error("session still served after shutdown")
	}
	if conn, err := net.Dial("tcp", e.addr); err == nil {
		conn.Close()
		t.Error("still listening after shutdown")
	}
}

func TestServeEdges(t *testing.T) {
	t.Run("cancelled before start", func(t *testing.T) {
		e := newEnv(t)
		a, err := New(e.config())
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := a.Serve(ctx, ln); err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
			t.Fatal("listener still open")
		}
	})
	t.Run("listener fails", func(t *testing.T) {
		e := newEnv(t)
		a, err := New(e.config())
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if err := a.Serve(context.Background(), ln); err == nil {
			t.Fatal("Serve on a closed listener returned nil")
		}
		select {
		case <-e.stopped:
		default:
			t.Error("advert not stopped")
		}
	})
	t.Run("advertise fails", func(t *testing.T) {
		e := newEnv(t)
		cfg := e.config()
		cfg.Advertise = func(string, int, string) (func(), error) {
			return nil, errors.New("no multicast here")
		}
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Serve(ctx, ln) }()
		e.agent, e.addr = a, ln.Addr().String()
		e.dial().Close()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if !strings.Contains(e.log.String(), "no multicast here") {
			t.Error("advertise failure not logged")
		}
	})
}
