// Package conformance is the carrier's integration suite: one set of tests
// that every kind of host must pass, run against a real OpenSSH sshd and
// against messor's own agent (see the _test files).
package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/internal/testenv"
	"github.com/messor-sync/messor/protocol"
)

// Host is a running test host.
type Host interface {
	// Addr is where it listens.
	Addr() (host string, port int)
	// KnownHostsLine is its known_hosts line.
	KnownHostsLine() string
	// Stop stops it.
	Stop()
}

// StartFunc starts a host serving loginDir (so that loginDir/messor is its
// messor directory) to the given keys.
type StartFunc func(t *testing.T, loginDir string, authorized []ssh.PublicKey) Host

// Env is a carrier with a HOME and any number of hosts.
type Env struct {
	T     *testing.T
	Home  *testenv.Home
	Start StartFunc
	Dirs  map[string]string // host name -> login dir
	Hosts map[string]Host
	Buf   string
}

// NewEnv makes a carrier HOME and starts one host per name, each trusted in
// known_hosts.
func NewEnv(t *testing.T, start StartFunc, names ...string) *Env {
	e := &Env{T: t, Home: testenv.NewHome(t), Start: start, Dirs: map[string]string{}, Hosts: map[string]Host{}}
	e.Buf = filepath.Join(e.Home.Dir, "messor", "buffer")
	for _, n := range names {
		e.AddHost(n, true)
	}
	return e
}

// AddHost starts a host called name.
func (e *Env) AddHost(name string, trusted bool) Host {
	dir := testenv.NewHostDir(e.T)
	h := e.Start(e.T, dir, []ssh.PublicKey{e.Home.Key.PublicKey()})
	addr, port := h.Addr()
	e.Home.AddHostAddr(name, addr, port)
	if trusted {
		e.Trust(h)
	}
	e.Dirs[name] = dir
	e.Hosts[name] = h
	return h
}

// Trust adds h's key to the carrier's known_hosts.
func (e *Env) Trust(h Host) {
	f, err := os.OpenFile(filepath.Join(e.Home.Dir, ".ssh", "known_hosts"), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		e.T.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, h.KnownHostsLine())
}

// Resolve returns the discovery.Host for names via the HOME's ssh config.
func (e *Env) Resolve(names ...string) []discovery.Host {
	cfg, err := discovery.LoadSSHConfig(e.Home.Dir)
	if err != nil {
		e.T.Fatal(err)
	}
	var out []discovery.Host
	for _, n := range names {
		h, err := cfg.Resolve(n)
		if err != nil {
			e.T.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

// TestConnectTimeout is the carriers' connect timeout unless a test sets
// its own: on a loaded machine connecting and logging in to sshd outlasted
// the 5 s default (load 40: "skipped, not reachable: timed out").
const TestConnectTimeout = 60 * time.Second

// Carrier opens the buffer with limit and returns a carrier (connect
// timeout TestConnectTimeout unless opts sets one); the buffer is closed
// when the test ends (or by the caller).
func (e *Env) Carrier(limit int64, opts carrier.Options) *carrier.Carrier {
	b, err := carrier.OpenBuffer(e.Buf, limit)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { b.Close() })
	if opts.Settle == 0 {
		opts.Settle = -1
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = TestConnectTimeout
	}
	opts.VerifySource = true
	return carrier.New(b, opts)
}

// Outbox writes files into host's outbox for dest, with mtimes in the past.
func (e *Env) Outbox(host, dest string, files map[string][]byte) {
	dir := filepath.Join(e.Dirs[host], filepath.FromSlash(protocol.OutboxDir(dest)))
	testenv.WriteTree(e.T, dir, files)
	old := time.Now().Add(-time.Hour)
	for name := range files {
		os.Chtimes(filepath.Join(dir, filepath.FromSlash(name)), old, old)
	}
}

// Inbox reads host's inbox for files from source.
func (e *Env) Inbox(host, source string) map[string][]byte {
	return testenv.ReadTree(e.T, filepath.Join(e.Dirs[host], filepath.FromSlash(protocol.InboxDir(source))))
}

// OutboxFiles reads host's whole outbox.
func (e *Env) OutboxFiles(host string) map[string][]byte {
	return testenv.ReadTree(e.T, filepath.Join(e.Dirs[host], filepath.FromSlash(protocol.Outbox)))
}

// MustOK fails the test on any failed host report.
func MustOK(t *testing.T, reports []*carrier.HostReport) {
	t.Helper()
	for _, r := range reports {
		if r.Err != nil || len(r.Failed) > 0 {
			t.Fatalf("%s: err=%v failed=%v", r.Summary(), r.Err, r.Failed)
		}
	}
}

// Dropoff runs a dropoff against all known hosts.
func (e *Env) Dropoff(c *carrier.Carrier, names ...string) []*carrier.HostReport {
	e.T.Helper()
	rs, err := c.Dropoff(context.Background(), e.Resolve(names...))
	if err != nil {
		e.T.Fatal(err)
	}
	return rs
}

// SameTree fails unless got equals want.
func SameTree(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: missing %q", what, k)
			continue
		}
		if !bytes.Equal(g, w) {
			t.Errorf("%s: %q differs: got %d bytes sha %x, want %d bytes sha %x", what, k, len(g), sha256.Sum256(g), len(w), sha256.Sum256(w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %q", what, k)
		}
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

// MixedTree is a tree with nested dirs, spaces and non-ASCII names, an
// empty file, files of several MiB, hundreds of small files and duplicate
// content.
func MixedTree(seed int64, small int) map[string][]byte {
	r := rand.New(rand.NewSource(seed))
	dup := randBytes(r, 10_000)
	t := map[string][]byte{
		"empty":                        {},
		"a b c/with space.txt":         []byte("spaces\n"),
		"ünïcødé/日本語/файл.txt":         []byte("non-ascii\n"),
		"deep/1/2/3/4/5/6/7/leaf.bin":  randBytes(r, 777),
		"big/one.bin":                  randBytes(r, 3<<20+17),
		"big/two.bin":                  randBytes(r, 5<<20),
		"dups/a.bin":                   dup,
		"dups/b.bin":                   dup,
		"dups/sub/c.bin":               dup,
		"photo.jpg":                    randBytes(r, 65_536),
		"-dash and 'quote' \"dq\".txt": []byte("shell metacharacters $(x) `y`\n"),
	}
	for i := 0; i < small; i++ {
		t[fmt.Sprintf("small/%02d/f%04d.txt", i%10, i)] = randBytes(r, r.Intn(4096))
	}
	return t
}

// Run runs every conformance test against hosts made by start.
func Run(t *testing.T, start StartFunc) {
	tests := []struct {
		name string
		fn   func(*testing.T, StartFunc)
	}{
		{"ExchangeBothWays", testExchange},
		{"SecondSyncChangesNothing", testSecondSync},
		{"Limit", testLimit},
		{"Unreachable", testUnreachable},
		{"HostKeys", testHostKeys},
		{"OneRunAtATime", testBusy},
		{"Collisions", testCollisions},
		{"StillBeingWritten", testSettle},
		{"HostileNames", testHostileNames},
		{"ResumeDropoff", testResumeDropoff},
		{"ResumeChangedSource", testResumeChangedSource},
		{"VerifyInSlices", testSlices},
		{"UnicodeNormalisation", testUnicodeNormalisation},
		{"ModesAndTimes", func(t *testing.T, start StartFunc) { testModes(t, start, 0) }},
		// Enough small files that a stock host with exec proves them in
		// batches (carrier's dropBatcher); the others, one by one.
		{"ModesAndTimesManySmall", func(t *testing.T, start StartFunc) { testModes(t, start, 100) }},
		{"TwoVersionsOfOneFile", func(t *testing.T, start StartFunc) { TwoVersions(t, start, start) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, start)
		})
	}
}

func testExchange(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	toBeta := MixedTree(1, 300)
	toAlpha := MixedTree(2, 120)
	e.Outbox("alpha", "beta", toBeta)
	e.Outbox("beta", "alpha", toAlpha)
	c := e.Carrier(1<<30, carrier.Options{})
	ctx := context.Background()

	rs := c.Pickup(ctx, e.Resolve("alpha", "beta"))
	MustOK(t, rs)
	if rs[0].Files != len(toBeta) || rs[1].Files != len(toAlpha) {
		t.Fatalf("picked up %d and %d files, want %d and %d", rs[0].Files, rs[1].Files, len(toBeta), len(toAlpha))
	}
	// Blackhole: the outboxes are empty (directories may stay).
	for _, h := range []string{"alpha", "beta"} {
		if got := e.OutboxFiles(h); len(got) != 0 {
			t.Fatalf("%s outbox still holds %d files", h, len(got))
		}
	}
	// Duplicate content is stored once: 3 dups in each tree share an object per tree.
	st, _ := carrier.ReadStatus(c.Buffer())
	if st.Stored >= st.Bytes {
		t.Errorf("stored %d bytes for %d bytes of files: duplicates were not shared", st.Stored, st.Bytes)
	}
	MustOK(t, e.Dropoff(c, "alpha", "beta"))
	SameTree(t, "beta inbox", e.Inbox("beta", "alpha"), toBeta)
	SameTree(t, "alpha inbox", e.Inbox("alpha", "beta"), toAlpha)
	st, _ = carrier.ReadStatus(c.Buffer())
	if st.Files != 0 || st.Stored != 0 {
		t.Fatalf("buffer still holds %d files, %d bytes after delivery", st.Files, st.Stored)
	}
	objs := testenv.ReadTree(t, filepath.Join(e.Buf, "objects"))
	parts := testenv.ReadTree(t, filepath.Join(e.Buf, "partial"))
	if len(objs)+len(parts) != 0 {
		t.Fatalf("buffer left %d objects, %d partials", len(objs), len(parts))
	}
}

func testSecondSync(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	files := MixedTree(3, 20)
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{})
	ctx := context.Background()
	MustOK(t, c.Pickup(ctx, e.Resolve("alpha", "beta")))
	MustOK(t, e.Dropoff(c, "alpha", "beta"))
	before := e.Inbox("beta", "alpha")
	rs := c.Pickup(ctx, e.Resolve("alpha", "beta"))
	MustOK(t, rs)
	rs2 := e.Dropoff(c, "alpha", "beta")
	MustOK(t, rs2)
	for _, r := range append(rs, rs2...) {
		if r.Files != 0 || r.Bytes != 0 {
			t.Errorf("second sync moved something: %s", r.Summary())
		}
	}
	SameTree(t, "inbox after second sync", e.Inbox("beta", "alpha"), before)
}

func testLimit(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	r := rand.New(rand.NewSource(4))
	dir := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")))
	// oldest first: old1 (40K), big (200K, does not fit), small (10K), newest (60K)
	files := []struct {
		name string
		size int
	}{{"old1", 40_000}, {"big", 200_000}, {"small", 10_000}, {"newest", 60_000}}
	base := time.Now().Add(-time.Hour)
	want := map[string][]byte{}
	for i, f := range files {
		b := randBytes(r, f.size)
		want[f.name] = b
		testenv.WriteTree(t, dir, map[string][]byte{f.name: b})
		ts := base.Add(time.Duration(i) * time.Minute)
		os.Chtimes(filepath.Join(dir, f.name), ts, ts)
	}
	c := e.Carrier(100_000, carrier.Options{})
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	MustOK(t, rs)
	if c.Buffer().Used() > 100_000 {
		t.Fatalf("buffer uses %d bytes, over its limit", c.Buffer().Used())
	}
	left := e.OutboxFiles("alpha")
	if _, ok := left["beta/big"]; !ok {
		t.Errorf("big file should wait: outbox has %v", keys(left))
	}
	if _, ok := left["beta/newest"]; !ok {
		t.Errorf("newest file should wait (60K does not fit after 50K): outbox has %v", keys(left))
	}
	if len(left) != 2 {
		t.Errorf("outbox holds %v, want big and newest", keys(left))
	}
	if rs[0].Files != 2 || len(rs[0].Waiting) != 2 {
		t.Errorf("report: %s", rs[0].Summary())
	}
	MustOK(t, e.Dropoff(c, "beta"))
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, e.Dropoff(c, "beta"))
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, e.Dropoff(c, "beta"))
	// big never fits a 100 KB buffer: it stays in the outbox, intact.
	SameTree(t, "outbox", e.OutboxFiles("alpha"), map[string][]byte{"beta/big": want["big"]})
	delete(want, "big")
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), want)
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func testUnreachable(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha")
	// A port nobody listens on, and an address that swallows packets,
	// each given 1 s by its ssh_config ConnectTimeout; alpha keeps the
	// suite's connect timeout (TestConnectTimeout), as a 1 s bound on its
	// login through sshd would fail this test on a loaded machine.
	e.Home.AddHostAddr("gone", "127.0.0.1", 1)
	appendSSHConfig(t, e.Home.Dir, " ConnectTimeout 1\n")
	e.Home.AddHostAddr("void", "10.255.255.1", 22)
	appendSSHConfig(t, e.Home.Dir, " ConnectTimeout 1\n")
	e.Outbox("alpha", "beta", map[string][]byte{"x": []byte("x")})
	c := e.Carrier(1<<20, carrier.Options{})
	t0 := time.Now()
	rs := c.Pickup(context.Background(), e.Resolve("gone", "void", "alpha"))
	if len(rs) != 3 {
		t.Fatalf("%d reports", len(rs))
	}
	for _, r := range rs[:2] {
		if !r.Unreachable() || r.Failure() {
			t.Errorf("%s: want unreachable and not a failure, got %v", r.Host, r.Err)
		}
	}
	MustOK(t, rs[2:])
	if rs[2].Files != 1 {
		t.Errorf("alpha: %s", rs[2].Summary())
	}
	t.Logf("gone, void and alpha in %v: %v; %v", time.Since(t0).Round(time.Millisecond), rs[0].Err, rs[1].Err)
}

// appendSSHConfig appends text to home's ~/.ssh/config: an option line
// appended after testenv.Home.AddHostAddr belongs to that host.
func appendSSHConfig(t *testing.T, home, text string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(home, ".ssh", "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func testHostKeys(t *testing.T, start StartFunc) {
	e := NewEnv(t, start)
	e.AddHost("stranger", false)
	e.Outbox("stranger", "beta", map[string][]byte{"x": []byte("x")})
	c := e.Carrier(1<<20, carrier.Options{})
	rs := c.Pickup(context.Background(), e.Resolve("stranger"))
	var uk *carrier.UnknownHostKeyError
	if !errors.As(rs[0].Err, &uk) || !rs[0].Failure() {
		t.Fatalf("unknown key: got %v", rs[0].Err)
	}
	for _, want := range []string{"stranger", "SHA256:", "--accept-new"} {
		if !strings.Contains(rs[0].Err.Error(), want) {
			t.Errorf("message %q does not mention %q", rs[0].Err, want)
		}
	}
	if len(e.OutboxFiles("stranger")) != 1 {
		t.Fatal("a refused host lost its file")
	}
	c.Buffer().Close()

	// accept-new pins it, and the file moves.
	c = e.Carrier(1<<20, carrier.Options{AcceptNew: true})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("stranger")))
	c.Buffer().Close()

	// The key pinned for the address is another one (the host was
	// replaced, or someone impersonates it): refused, even with accept-new.
	other, _ := sshdtest.NewKey(t)
	host, port := e.Hosts["stranger"].Addr()
	kh := filepath.Join(e.Home.Dir, ".ssh", "known_hosts")
	os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(fmt.Sprintf("%s:%d", host, port))}, other.PublicKey())+"\n"), 0o600)
	e.Outbox("stranger", "beta", map[string][]byte{"y": []byte("y")})
	c = e.Carrier(1<<20, carrier.Options{AcceptNew: true})
	rs = c.Pickup(context.Background(), e.Resolve("stranger"))
	var ck *carrier.ChangedHostKeyError
	if !errors.As(rs[0].Err, &ck) {
		t.Fatalf("changed key: got %v", rs[0].Err)
	}
	if !strings.Contains(rs[0].Err.Error(), "CHANGED") {
		t.Errorf("message: %v", rs[0].Err)
	}
	if len(e.OutboxFiles("stranger")) != 1 {
		t.Fatal("the impostor's file was taken")
	}
}

func testBusy(t *testing.T, start StartFunc) {
	e := NewEnv(t, start)
	c := e.Carrier(1<<20, carrier.Options{})
	_ = c
	_, err := carrier.OpenBuffer(e.Buf, 1<<20)
	if !errors.Is(err, carrier.ErrBufferBusy) {
		t.Fatalf("second open: %v, want ErrBufferBusy", err)
	}
	if !strings.Contains(err.Error(), e.Buf) {
		t.Errorf("message %q does not name the buffer", err)
	}
}

func testCollisions(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{
		"same.txt":  []byte("identical\n"),
		"other.txt": []byte("new content\n"),
		"noext":     []byte("new noext\n"),
	})
	inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
	testenv.WriteTree(t, inbox, map[string][]byte{
		"same.txt":  []byte("identical\n"),
		"other.txt": []byte("old content\n"),
		"noext":     []byte("old noext\n"),
		"noext (2)": []byte("older noext\n"),
	})
	c := e.Carrier(1<<20, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	rs := e.Dropoff(c, "beta")
	MustOK(t, rs)
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{
		"same.txt":      []byte("identical\n"),
		"other.txt":     []byte("old content\n"),
		"other (2).txt": []byte("new content\n"),
		"noext":         []byte("old noext\n"),
		"noext (2)":     []byte("older noext\n"),
		"noext (3)":     []byte("new noext\n"),
	})
	if rs[0].Already != 1 || rs[0].Files != 2 {
		t.Errorf("report: %s", rs[0].Summary())
	}
}

func testSettle(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha")
	dir := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")))
	testenv.WriteTree(t, dir, map[string][]byte{"fresh": []byte("being written")})
	c := e.Carrier(1<<20, carrier.Options{Settle: time.Hour})
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	MustOK(t, rs)
	if rs[0].Files != 0 || len(rs[0].Waiting) != 1 || len(e.OutboxFiles("alpha")) != 1 {
		t.Fatalf("a fresh file was taken: %s", rs[0].Summary())
	}
}

func testHostileNames(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha")
	out := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.Outbox))
	good := map[string][]byte{"ok.txt": []byte("ok")}
	e.Outbox("alpha", "beta", good)
	mk := func(rel string, data string) {
		p := filepath.Join(out, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		os.Chtimes(p, old, old)
	}
	mk("beta/line\nbreak", "newline")
	mk("beta/ctl\x01char", "control")
	mk("beta/.messor.part.0123", "partial of ours")
	mk("beta/.messor-other", "reserved")
	mk("bad dest/x", "bad destination")
	mk("..beta/x", "dotted dest")
	mk("beta/"+strings.Repeat("n", 255), "long name ok")
	os.Symlink("/etc/passwd", filepath.Join(out, "beta", "link"))
	os.Symlink("/etc", filepath.Join(out, "beta", "dirlink"))
	if err := mkfifo(filepath.Join(out, "beta", "fifo")); err != nil {
		t.Fatal(err)
	}
	c := e.Carrier(1<<20, carrier.Options{})
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	MustOK(t, rs)
	if rs[0].Files != 2 {
		t.Errorf("want ok.txt and the long name carried: %s", rs[0].Summary())
	}
	if len(rs[0].Skipped) < 6 {
		t.Errorf("want >= 6 skipped, got %v", rs[0].Skipped)
	}
	st, _ := carrier.ReadStatus(c.Buffer())
	for _, it := range st.Items {
		if _, err := protocol.CleanRelPath(it.Path); err != nil {
			t.Errorf("carried a bad name: %q", it.Path)
		}
	}
	// The skipped ones are all still there (nothing lost).
	if _, err := os.Lstat(filepath.Join(out, "beta", "fifo")); err != nil {
		t.Error("fifo removed")
	}
	if _, err := os.Lstat(filepath.Join(out, "beta", "line\nbreak")); err != nil {
		t.Error("newline file removed")
	}
}

// testResumeDropoff leaves a partial upload (with a corrupted tail) in the
// inbox and checks delivery still ends with the right content.
func testResumeDropoff(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	r := rand.New(rand.NewSource(9))
	data := randBytes(r, 6<<20)
	e.Outbox("alpha", "beta", map[string][]byte{"v/big.bin": data})
	c := e.Carrier(1<<30, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	st, _ := carrier.ReadStatus(c.Buffer())
	hash := st.Items[0].Hash
	dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "v")
	os.MkdirAll(dir, 0o755)
	partial := filepath.Join(dir, protocol.PartialName("v/big.bin", hash, c.Buffer().ID()))
	bad := append([]byte(nil), data[:4<<20]...)
	copy(bad[len(bad)-1000:], make([]byte, 1000)) // a hole at the end
	os.WriteFile(partial, bad, 0o644)
	MustOK(t, e.Dropoff(c, "beta"))
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"v/big.bin": data})
}

// testSlices: with slices of 1 MiB, files of several MiB are verified slice
// by slice while they are uploaded (where the host hashes for us), one from
// its start, one resumed from a partial whose tail is damaged, so that it
// resumes at an offset that is neither a multiple of a slice nor of 1 MiB.
func testSlices(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	r := rand.New(rand.NewSource(10))
	fresh, resumed := randBytes(r, 5<<20+4321), randBytes(r, 7<<20+1)
	files := map[string][]byte{"s/fresh.bin": fresh, "s/resumed.bin": resumed, "s/exact.bin": randBytes(r, 2<<20)}
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	st, _ := carrier.ReadStatus(c.Buffer())
	var hash string
	for _, it := range st.Items {
		if it.Path == "s/resumed.bin" {
			hash = it.Hash
		}
	}
	dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "s")
	os.MkdirAll(dir, 0o755)
	partial := filepath.Join(dir, protocol.PartialName("s/resumed.bin", hash, c.Buffer().ID()))
	// The end does not verify; 512 KiB before it does.
	bad := append([]byte(nil), resumed[:3<<20+600<<10+12345]...)
	copy(bad[len(bad)-1000:], make([]byte, 1000))
	if err := os.WriteFile(partial, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	MustOK(t, e.Dropoff(c, "beta"))
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
}

// TwoVersions: two versions of one file (same source, same path, picked
// up on two visits) for one destination both arrive: report.txt and
// "report (2).txt"; none is lost, whatever the server's rename does.
func TwoVersions(t *testing.T, alpha, beta StartFunc) {
	e := NewEnv(t, alpha, "alpha")
	e.Start = beta
	e.AddHost("beta", true)
	c := e.Carrier(1<<30, carrier.Options{})
	want := map[string][]byte{}
	for i := 0; i < 4; i++ {
		name := fmt.Sprintf("report%d.txt", i)
		v1 := make([]byte, 300<<10)
		rand.Read(v1)
		e.Outbox("alpha", "beta", map[string][]byte{name: v1})
		MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
		v2 := make([]byte, 301<<10)
		rand.Read(v2)
		e.Outbox("alpha", "beta", map[string][]byte{name: v2})
		MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
		want[name] = v1
		want[fmt.Sprintf("report%d (2).txt", i)] = v2
	}
	ents, _ := c.Buffer().Entries()
	if len(ents) != 8 {
		t.Fatalf("buffer holds %d entries, want 8", len(ents))
	}
	rs := e.Dropoff(c, "beta")
	MustOK(t, rs)
	t.Logf("%s", rs[0].Summary())
	// A host that cannot sync (pkg/sftp's server) has the files, and the
	// carrier lets go of them when a later visit finds them there.
	MustOK(t, e.Dropoff(c, "beta"))
	got := e.Inbox("beta", "alpha")
	ents, _ = c.Buffer().Entries()
	t.Logf("inbox holds %d files, buffer %d entries (8 versions were carried)", len(got), len(ents))
	if len(ents) != 0 {
		t.Errorf("buffer still holds %d entries", len(ents))
	}
	// Both versions arrive, one under each name (which one gets the plain
	// name depends on which worker gets there first).
	for i := 0; i < 4; i++ {
		a, b := fmt.Sprintf("report%d.txt", i), fmt.Sprintf("report%d (2).txt", i)
		if !(bytes.Equal(got[a], want[a]) && bytes.Equal(got[b], want[b])) &&
			!(bytes.Equal(got[a], want[b]) && bytes.Equal(got[b], want[a])) {
			t.Errorf("%s and %s: the two versions did not both arrive", a, b)
		}
	}
	if len(got) != len(want) {
		t.Errorf("inbox holds %d files, want %d: %v", len(got), len(want), keys(got))
	}
}

// testUnicodeNormalisation: two names that are one after Unicode
// normalisation (NFC "café" and NFD "cafe\u0301") are two files on Linux:
// both are carried and both arrive, nothing is merged or lost.
func testUnicodeNormalisation(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	files := map[string][]byte{
		"caf\u00e9.txt":       []byte("composed\n"),
		"cafe\u0301.txt":      []byte("decomposed\n"),
		"dir\u00e9/x.txt":     []byte("composed dir\n"),
		"dire\u0301/x.txt":    []byte("decomposed dir\n"),
		"\u212b ngstr\u00f6m": []byte("angstrom sign\n"),
		"\u00c5 ngstr\u00f6m": []byte("A with ring\n"),
	}
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<20, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, e.Dropoff(c, "beta"))
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
}

// testModes: a file arrives with its source's permission bits (never
// setuid, setgid or sticky) and its source's mtime, and the directories the
// carrier makes in the inbox are private (0700): what a 0600 file holds is
// not readable by the destination's other users, not even while it is being
// delivered.
// testModes delivers files of several modes and mtimes, with filler small
// files of mode 0644 beside them, and checks each arrives with its
// source's mode and mtime.
func testModes(t *testing.T, start StartFunc, filler int) {
	e := NewEnv(t, start, "alpha", "beta")
	files := map[string][]byte{
		"secret.txt":           []byte("only mine\n"),
		"bin/tool.sh":          []byte("#!/bin/sh\necho hi\n"),
		"shared/readme.txt":    []byte("for all\n"),
		"shared/deep/suid":     []byte("not setuid on arrival\n"),
		"big/private.bin":      bytes.Repeat([]byte{9}, 3<<20+5), // uploaded in pieces
		"shared/deep/sticky/x": []byte("x\n"),
		"readonly.txt":         []byte("do not change\n"),
	}
	modes := map[string]os.FileMode{
		"secret.txt":           0o600,
		"bin/tool.sh":          0o755,
		"shared/readme.txt":    0o644,
		"shared/deep/suid":     0o755 | os.ModeSetuid | os.ModeSetgid,
		"big/private.bin":      0o640,
		"shared/deep/sticky/x": 0o604 | os.ModeSticky,
		"readonly.txt":         0o400,
	}
	for i := range filler {
		name := fmt.Sprintf("filler/%s/%03d", []string{"a b", "-x", "it's"}[i%3], i)
		files[name] = bytes.Repeat([]byte{byte(i)}, 4096)
		modes[name] = 0o644
	}
	e.Outbox("alpha", "beta", files)
	out := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")))
	mtimes := map[string]time.Time{}
	for i, name := range keys(files) {
		p := filepath.Join(out, filepath.FromSlash(name))
		if err := os.Chmod(p, modes[name]); err != nil {
			t.Fatal(err)
		}
		mt := time.Date(2021, 3, 4, 5, 6, 7+i, 0, time.UTC)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		mtimes[name] = mt
	}
	c := e.Carrier(1<<30, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, e.Dropoff(c, "beta"))
	inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
	for name, m := range modes {
		fi, err := os.Stat(filepath.Join(inbox, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky), m.Perm(); got != want {
			t.Errorf("%s arrived with mode %v, want %v (the source's %v without setuid, setgid, sticky)", name, got, want, m)
		}
		if !fi.ModTime().Equal(mtimes[name]) {
			t.Errorf("%s arrived with mtime %v, want the source's %v", name, fi.ModTime(), mtimes[name])
		}
	}
	filepath.WalkDir(inbox, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("inbox directory %s made with mode %v: open to group or others", p, fi.Mode().Perm())
		}
		return nil
	})
}
