package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// logBuffer collects the agent's log for assertions, and echoes it to the
// test's output (shown on failure or with -v).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	return l.out.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testEnv is one agent on 127.0.0.1 with its own directories and a carrier
// key in its authorized_keys.
type testEnv struct {
	t        *testing.T
	dir      string // holds root, keys, and an "outside" directory
	root     string // Config.Root
	outside  string // a directory next to root that must stay unreachable
	authKeys string
	hostKey  string
	carrier  ssh.Signer
	log      *logBuffer

	agent *Agent
	addr  string
	ln    net.Listener

	advertised chan advert
	stopped    chan struct{}
}

type advert struct {
	name, fingerprint string
	port              int
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	dir := t.TempDir()
	e := &testEnv{
		t:          t,
		dir:        dir,
		root:       filepath.Join(dir, "home", "messor"),
		outside:    filepath.Join(dir, "outside"),
		authKeys:   filepath.Join(dir, "home", ".ssh", "authorized_keys"),
		hostKey:    filepath.Join(dir, "home", ".config", "messor", "hostkey"),
		carrier:    newSigner(t),
		log:        &logBuffer{out: t.Output()},
		advertised: make(chan advert, 4),
		stopped:    make(chan struct{}, 4),
	}
	if err := os.MkdirAll(e.outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.writeAuthorizedKeys(string(ssh.MarshalAuthorizedKey(e.carrier.PublicKey())))
	return e
}

func (e *testEnv) writeAuthorizedKeys(content string) {
	e.t.Helper()
	if err := os.MkdirAll(filepath.Dir(e.authKeys), 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(e.authKeys, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *testEnv) config() Config {
	return Config{
		Root:               e.root,
		Name:               "testhost",
		AuthorizedKeysFile: e.authKeys,
		HostKeyFile:        e.hostKey,
		Logger:             slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Advertise: func(name string, port int, fp string) (func(), error) {
			e.advertised <- advert{name, fp, port}
			return func() { e.stopped <- struct{}{} }, nil
		},
	}
}

// start runs the agent until the test ends; the returned function stops it
// early and reports Serve's result.
func (e *testEnv) start() (stop func() error) {
	e.t.Helper()
	a, err := New(e.config())
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.agent, e.ln, e.addr = a, ln, ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-done:
			case <-time.After(10 * time.Second):
				serveErr = errors.New("Serve did not return within 10s of cancel")
			}
		})
		return serveErr
	}
	e.t.Cleanup(func() {
		if err := stop(); err != nil {
			e.t.Errorf("Serve: %v", err)
		}
	})
	return stop
}

func (e *testEnv) clientConfig(auth ...ssh.AuthMethod) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            "carrier",
		Auth:            auth,
		HostKeyCallback: ssh.FixedHostKey(e.agent.HostKey()),
		Timeout:         10 * time.Second,
	}
}

func (e *testEnv) dialWith(signer ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp", e.addr, e.clientConfig(ssh.PublicKeys(signer)))
}

// dial logs in with the carrier's key; the connection is closed when the
// test ends.
func (e *testEnv) dial() *ssh.Client {
	e.t.Helper()
	c, err := e.dialWith(e.carrier)
	if err != nil {
		e.t.Fatalf("login with authorized key: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *testEnv) sftp(opts ...sftp.ClientOption) *sftp.Client {
	e.t.Helper()
	c, err := sftp.NewClient(e.dial(), opts...)
	if err != nil {
		e.t.Fatalf("sftp: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// inRoot is the host path of rel under Root.
func (e *testEnv) inRoot(rel string) string { return filepath.Join(e.root, filepath.FromSlash(rel)) }

func isPermission(err error) bool {
	if errors.Is(err, os.ErrPermission) {
		return true
	}
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxPermissionDenied
}

func isNotExist(err error) bool {
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxNoSuchFile
}

func writeFile(t *testing.T, c *sftp.Client, p string, data []byte) {
	t.Helper()
	f, err := c.Create(p)
	if err != nil {
		t.Fatalf("create %s: %v", p, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", p, err)
	}
}

func readFile(t *testing.T, c *sftp.Client, p string) []byte {
	t.Helper()
	f, err := c.Open(p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
