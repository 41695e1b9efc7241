package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/netns"
)

// messorBin is the messor binary TestMain builds from ./cmd/messor.
var messorBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if spec := os.Getenv(forgeEnv); spec != "" {
		return forgeAdverts(spec)
	}
	dir, err := os.MkdirTemp("", "messor-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: finding the module root with go list -m: %v\n", err)
		return 1
	}
	root := strings.TrimSpace(string(out))
	messorBin = filepath.Join(dir, "messor")
	args := []string{"build", "-o", messorBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, "go", append(args, "./cmd/messor")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %s (in %s): %v\n%s", strings.Join(args, " "), root, err, out)
		return 1
	}
	return m.Run()
}

// requireRootAndIP fails (never skips) when the test cannot build its
// network: CI runs these tests as root.
func requireRootAndIP(t *testing.T) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		t.Fatalf("end-to-end tests need root for network namespaces (uid is %d); run them as root, as CI does", uid)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("end-to-end tests need ip(8) from iproute2 (apt-get install iproute2): %v", err)
	}
}

// envFor is the test's environment with HOME set to home and nothing that
// could leak the machine's own messor or SSH setup into a run.
func envFor(home string) []string {
	var env []string
	gorace := "atexit_sleep_ms=0" // a -race build would otherwise sleep 1s at every exit
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "GORACE":
			gorace = v + " " + gorace
		case k == "HOME" || k == "SSH_AUTH_SOCK" || k == "SSH_AGENT_PID" || strings.HasPrefix(k, "MESSOR_"):
		default:
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+home, "GORACE="+gorace)
}

// syncBuf is a bytes.Buffer safe for a process to write while the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkNoRace fails the test if a -race build of messor reported a race.
func checkNoRace(t *testing.T, what, output string) {
	t.Helper()
	if strings.Contains(output, "WARNING: DATA RACE") {
		t.Errorf("%s: the race detector reported a data race:\n%s", what, output)
	}
}

// agentProc is one `messor agent` running in a namespace.
type agentProc struct {
	label string // for messages: "alpha", "beta", "impostor alpha"
	name  string // advertised name
	node  int
	home  string
	cmd   *exec.Cmd

	stdout, stderr syncBuf
	done           chan struct{}
	waitErr        error // set before done is closed

	fingerprint string // "SHA256:...", as printed at start
	listen      string // as printed at start
}

func (a *agentProc) root() string { return filepath.Join(a.home, "messor") }

// outbox is the agent's outbox for dest; inbox its inbox from source.
func (a *agentProc) outbox(dest string) string  { return filepath.Join(a.root(), "outbox", dest) }
func (a *agentProc) inbox(source string) string { return filepath.Join(a.root(), "inbox", source) }
func (a *agentProc) hostKeyFile() string {
	return filepath.Join(a.home, ".config", "messor", "agent_host_ed25519_key")
}
func (a *agentProc) authorizedKeysFile() string {
	return filepath.Join(a.home, ".ssh", "authorized_keys")
}
func (a *agentProc) output() string {
	return "stdout:\n" + a.stdout.String() + "stderr:\n" + a.stderr.String()
}
func (a *agentProc) exited() bool { return isClosed(a.done) }
func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

var startedRE = regexp.MustCompile(`messor agent "([^"]*)" serving (\S+) on (\S+)\nhost key (SHA256:\S+)\n`)

// startAgent runs `messor agent` named name in node's namespace with HOME
// home (which must hold .ssh/authorized_keys), and waits until it has
// printed that it listens and its host key fingerprint. It registers a
// cleanup that kills it if the test did not stop it.
func startAgent(ctx context.Context, t *testing.T, nt *netns.Net, node int, label, name, home string) *agentProc {
	t.Helper()
	a := &agentProc{label: label, name: name, node: node, home: home, done: make(chan struct{})}
	if err := os.MkdirAll(a.root(), 0o755); err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", nt.NS(node), messorBin, "agent",
		"--root", a.root(), "--name", name, "--listen", "0.0.0.0:2290",
		"--authorized-keys", a.authorizedKeysFile(), "--host-key", a.hostKeyFile())
	a.cmd.Env = envFor(home)
	a.cmd.Stdout, a.cmd.Stderr = &a.stdout, &a.stderr
	a.cmd.WaitDelay = 5 * time.Second
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("starting agent %s: %v", label, err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		if !a.exited() {
			_ = a.cmd.Process.Kill()
			<-a.done
		}
		if t.Failed() {
			t.Logf("agent %s (node %d, %s) exited with %v; its output:\n%s", a.label, a.node, nt.IP(a.node), a.waitErr, a.output())
		}
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := startedRE.FindStringSubmatch(a.stdout.String()); m != nil {
			if m[1] != name {
				t.Fatalf("agent %s says it is %q, want %q:\n%s", label, m[1], name, a.output())
			}
			a.listen, a.fingerprint = m[3], m[4]
			break
		}
		if a.exited() {
			t.Fatalf("agent %s exited before serving: %v\n%s", label, a.waitErr, a.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s did not print that it serves within 15s:\n%s", label, a.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("agent %s (%q) in node %d (%s) listens on %s, host key %s", label, name, node, nt.IP(node), a.listen, a.fingerprint)
	return a
}

// stop sends SIGTERM and checks that the agent says it stopped and exits 0.
func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	if a.exited() {
		t.Fatalf("agent %s had already exited (%v) before it was stopped:\n%s", a.label, a.waitErr, a.output())
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to agent %s: %v", a.label, err)
	}
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
		t.Fatalf("agent %s did not exit within 15s of SIGTERM:\n%s", a.label, a.output())
	}
	if a.waitErr != nil {
		t.Errorf("agent %s: after SIGTERM it exited with %v, want exit status 0:\n%s", a.label, a.waitErr, a.output())
	}
	if !strings.Contains(a.stdout.String(), "messor agent stopped") {
		t.Errorf("agent %s: no \"messor agent stopped\" after SIGTERM:\n%s", a.label, a.output())
	}
	checkNoRace(t, "agent "+a.label, a.stderr.String())
}

// carrierEnv runs messor as the carrier in one namespace with its own HOME.
type carrierEnv struct {
	ctx   context.Context
	nt    *netns.Net
	node  int
	home  string
	hosts string // empty hosts file
}

// result is one finished carrier run.
type result struct {
	args           string
	stdout, stderr string
	code           int
}

func (r result) output() string { return r.stdout + r.stderr }

func (r result) String() string {
	return fmt.Sprintf("$ messor %s\nexit status %d\n--- stdout:\n%s--- stderr:\n%s", r.args, r.code, r.stdout, r.stderr)
}

// run runs `messor ARGS --hosts EMPTYFILE` in the carrier's namespace and
// logs what it printed (shown when the test fails, or with -v).
func (c *carrierEnv) run(t *testing.T, args ...string) result {
	t.Helper()
	args = append(args, "--hosts", c.hosts)
	ctx, cancel := context.WithTimeout(c.ctx, 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.nt.NS(c.node), messorBin}, args...)...)
	cmd.Env = envFor(c.home)
	var stdout, stderr syncBuf
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{args: strings.Join(args, " "), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("carrier run timed out (%v) and was killed:\n%s", ctx.Err(), r)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("carrier: messor %s: %v", r.args, err)
	}
	t.Logf("%s\n(took %s)", r, time.Since(start).Round(time.Millisecond))
	checkNoRace(t, "messor "+r.args, r.stderr)
	return r
}

// wantCode fails the test unless r exited with code.
func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("messor %s: exit status %d, want %d:\n%s", r.args, r.code, code, r)
	}
}

// wantOutput fails the test unless r's stdout or stderr contains every one
// of subs.
func wantOutput(t *testing.T, r result, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(r.output(), s) {
			t.Errorf("messor %s: output does not mention %q:\n%s", r.args, s, r)
		}
	}
}

// newCarrierKey makes an ed25519 key, writes it as an OpenSSH PEM private
// key at home/.ssh/id_ed25519 (0600) and returns its authorized_keys line.
func newCarrierKey(t *testing.T, home string) []byte {
	t.Helper()
	return ssh.MarshalAuthorizedKey(newKeyFile(t, filepath.Join(home, ".ssh", "id_ed25519"), "messor e2e carrier"))
}

// newKeyFile makes an ed25519 key, writes it as an OpenSSH PEM private key
// at path (0600) and returns its public key.
func newKeyFile(t *testing.T, path, comment string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, pem.EncodeToMemory(block), 0o600)
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writeFile(t *testing.T, path string, b []byte, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

// tree is a set of files: slash-separated relative path -> content.
type tree map[string][]byte

// randomBytes returns n bytes of random data.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// put writes files under dir with modification time mtime.
func put(t *testing.T, dir string, files tree, mtime time.Time) {
	t.Helper()
	for p, b := range files {
		f := filepath.Join(dir, filepath.FromSlash(p))
		writeFile(t, f, b, 0o644)
		if err := os.Chtimes(f, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// read returns every regular file under dir (an absent dir is empty), and
// fails the test on anything else that is not a directory.
func read(t *testing.T, dir string) tree {
	t.Helper()
	out := tree{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == dir {
			return fs.SkipDir
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			t.Errorf("%s: unexpected %v", p, d.Type())
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// merge returns the union of trees (later ones win).
func merge(ts ...tree) tree {
	out := tree{}
	for _, t := range ts {
		for p, b := range t {
			out[p] = b
		}
	}
	return out
}

func describe(tr tree) string {
	if len(tr) == 0 {
		return "  (nothing)\n"
	}
	var names []string
	for p := range tr {
		names = append(names, p)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, p := range names {
		fmt.Fprintf(&b, "  %q: %d bytes, sha256 %x\n", p, len(tr[p]), sha256.Sum256(tr[p]))
	}
	return b.String()
}

// wantTree fails the test unless dir holds exactly want (same names, same
// bytes), nothing more.
func wantTree(t *testing.T, what, dir string, want tree) {
	t.Helper()
	got := read(t, dir)
	same := len(got) == len(want)
	for p, b := range want {
		if g, ok := got[p]; !ok || !bytes.Equal(g, b) {
			same = false
		}
	}
	if !same {
		t.Errorf("%s (%s):\n got\n%s want\n%s", what, dir, describe(got), describe(want))
	}
}
