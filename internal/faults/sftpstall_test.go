package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// stallHook sits on a relay in front of a stock sshd and does what the
// stallAt armed says.
type stallHook struct {
	armed atomic.Pointer[stallAt]
	hold  chan struct{} // closed when the test ends
}

// stallAt: at the at-th SFTP request that match picks (at 0: at every
// one), run act (which may change the host's files just before the host
// gets the request), or, with act nil, hold the request: never passed on,
// never answered, while the connection and its keepalives go on as before.
type stallAt struct {
	at    int32
	match func(sftptest.Request) bool
	act   func(sftptest.Request)
	n     atomic.Int32
	fired atomic.Bool
}

// arm acts as a says from now on, and returns a.
func (h *stallHook) arm(a *stallAt) *stallAt {
	h.armed.Store(a)
	return a
}

func (h *stallHook) see(r sftptest.Request) bool {
	a := h.armed.Load()
	if a == nil || !a.match(r) {
		return false
	}
	if n := a.n.Add(1); a.at > 0 && n != a.at {
		return false
	}
	a.fired.Store(true)
	if a.act != nil {
		a.act(r)
		return false
	}
	<-h.hold
	return true
}

// newStallEnv is hosts alpha and beta, each a stock sshd behind a relay
// that shows h every SFTP request.
func newStallEnv(t *testing.T) (*env, *stallHook) {
	h := &stallHook{hold: make(chan struct{})}
	t.Cleanup(func() { close(h.hold) })
	e := &env{Env: conformance.NewEnv(t, relayedSSHD(h.see), "alpha", "beta")}
	e.world = NewWorld(e.Dirs, e.Buf)
	return e, h
}

// relayedSSHD starts each host as a stock sshd behind a relay that shows
// hook every SFTP request (sftptest.StartRelay).
func relayedSSHD(hook sftptest.Hook) conformance.StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		requireRoot(t)
		signer, _ := sshdtest.NewKey(t)
		s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: append(keys, signer.PublicKey())})
		return sftptest.StartRelay(t, keys, net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), "root", signer, hook)
	}
}

// plantFIFO returns a hook action that puts a FIFO in the place of the
// request's path on host (an open of it blocks in sftp-server until a
// writer comes); the FIFO's other end is opened when the test ends, so
// that no sftp-server stays blocked.
func plantFIFO(t *testing.T, dir string) func(sftptest.Request) {
	return func(r sftptest.Request) {
		p := filepath.Join(dir, filepath.FromSlash(r.Path))
		os.Remove(p)
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			panic(err)
		}
		t.Cleanup(func() { unblockFIFO(p) })
	}
}

// unblockFIFO opens p's FIFO without blocking, which lets an open blocked
// at its other end go on.
func unblockFIFO(p string) {
	if f, err := os.OpenFile(p, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
}

// stallRun runs one leg under a deadline far beyond the idle timeout: the
// run must end on its own (the test fails if the deadline had to end it),
// with ErrStalled naming host and want.
func stallRun(t *testing.T, host, want string, run func(ctx context.Context) []*carrier.HostReport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rs := run(ctx)
	if len(rs) != 1 {
		t.Fatalf("want one report, got %d", len(rs))
	}
	if ctx.Err() != nil {
		t.Fatalf("the run hung until the test's deadline ended it: %v", rs[0].Err)
	}
	if !errors.Is(rs[0].Err, carrier.ErrStalled) {
		t.Fatalf("want ErrStalled, got %v (%s: %v)", rs[0].Err, rs[0].Summary(), rs[0].Failed)
	}
	msg := rs[0].Err.Error()
	if !strings.Contains(msg, "host "+host) || !strings.Contains(msg, want) {
		t.Errorf("the error should name host %s and %q: %s", host, want, msg)
	}
	t.Logf("%s", msg)
}

func pickupRun(c *carrier.Carrier, e *env) func(context.Context) []*carrier.HostReport {
	return func(ctx context.Context) []*carrier.HostReport { return c.Pickup(ctx, e.Resolve("alpha")) }
}

func dropoffRun(c *carrier.Carrier, e *env) func(context.Context) []*carrier.HostReport {
	return func(ctx context.Context) []*carrier.HostReport { rs, _ := c.Dropoff(ctx, e.Resolve("beta")); return rs }
}

// settle runs pickup and dropoff until both succeed, at most twice each.
func (e *env) settle(t *testing.T, c *carrier.Carrier) {
	t.Helper()
	ctx := context.Background()
	if err := reportsErr(c.Pickup(ctx, e.Resolve("alpha"))); err != nil {
		t.Fatalf("the pickup after the stall: %v", err)
	}
	e.world.Check(t, c.Buffer())
	rs, _ := c.Dropoff(ctx, e.Resolve("beta"))
	if err := reportsErr(rs); err != nil {
		t.Fatalf("the dropoff after the stall: %v", err)
	}
	e.world.CheckSettled(t, c.Buffer())
}

// TestStallFIFOInOutbox swaps a listed outbox file for a FIFO just before
// the carrier's SFTP open of it, on a stock sshd: sftp-server blocks in
// open(2) while the SSH connection (and its keepalives) stays healthy.
// The pickup ends on its own with ErrStalled naming the host and the
// file, keeps what it carried, and the next runs carry everything else.
func TestStallFIFOInOutbox(t *testing.T) {
	t.Parallel()
	e, h := newStallEnv(t)
	r := rand.New(rand.NewSource(14))
	e.send("alpha", "beta", map[string][]byte{"fifo/a.txt": randBytes(r, 3000), "fifo/b.bin": randBytes(r, 2<<20)})
	e.Outbox("alpha", "beta", map[string][]byte{"fifo/victim.txt": []byte("swapped for a FIFO\n")})
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: 2 * time.Second})
	a := h.arm(&stallAt{at: 1, match: func(r sftptest.Request) bool {
		return r.Type == sftptest.FxpOpen && strings.HasSuffix(r.Path, "victim.txt")
	}, act: plantFIFO(t, e.Dirs["alpha"])})
	stallRun(t, "alpha", "victim.txt", pickupRun(c, e))
	if h.arm(nil); !a.fired.Load() {
		t.Fatal("the carrier never opened the file")
	}
	e.world.Check(t, c.Buffer())
	e.settle(t, c)
}

// TestStallFIFOInInbox plants a FIFO where a dropoff's partial goes in the
// destination's inbox, just before the carrier opens it. A partial is
// created exclusively, never opened as found (createPartial): the FIFO is
// removed, not opened (which could block), and the dropoff delivers all.
func TestStallFIFOInInbox(t *testing.T) {
	t.Parallel()
	e, h := newStallEnv(t)
	r := rand.New(rand.NewSource(15))
	e.send("alpha", "beta", map[string][]byte{"in/a.txt": randBytes(r, 3000), "in/b.bin": randBytes(r, 2<<20)})
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: 2 * time.Second})
	if err := reportsErr(c.Pickup(context.Background(), e.Resolve("alpha"))); err != nil {
		t.Fatal(err)
	}
	var fifo string
	plant := plantFIFO(t, e.Dirs["beta"])
	a := h.arm(&stallAt{at: 1, match: func(r sftptest.Request) bool {
		return r.Type == sftptest.FxpOpen && strings.Contains(r.Path, protocol.InboxDir("alpha")+"/")
	}, act: func(r sftptest.Request) { fifo = filepath.Join(e.Dirs["beta"], filepath.FromSlash(r.Path)); plant(r) }})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rs := dropoffRun(c, e)(ctx)
	if ctx.Err() != nil {
		t.Fatalf("the dropoff hung until the test's deadline ended it: %v", rs[0].Err)
	}
	if h.arm(nil); !a.fired.Load() {
		t.Fatal("the carrier never opened a partial")
	}
	if err := reportsErr(rs); err != nil {
		t.Fatalf("want every file delivered, the FIFO removed: %v", err)
	}
	if _, err := os.Lstat(fifo); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the FIFO under a partial's name is still there (%v)", err)
	}
	t.Logf("%s: %v", rs[0].Summary(), rs[0].Failed)
	e.world.Check(t, c.Buffer())
	unblockFIFO(fifo)
	os.Remove(fifo)
	e.settle(t, c)
}

// noStallIdle is the idle timeout of the tests where a slow host must not
// be taken for stalled: short, for quick tests, but not so short that a
// loaded machine's late keepalive reply looks like a stall (at 2 s, load 50
// took TestStallSlowFsync's host for stalled: "no data for 2s").
const noStallIdle = 3 * time.Second

// TestStallSlowFsync: a host whose every fsync (files and directories)
// takes longer than the idle timeout (a slow SD card) is not taken for
// stalled: an fsync outstanding may take twice as long, and more in
// proportion to the bytes written.
func TestStallSlowFsync(t *testing.T) {
	t.Parallel()
	e, h := newStallEnv(t)
	r := rand.New(rand.NewSource(17))
	e.send("alpha", "beta", map[string][]byte{"slow/big.bin": randBytes(r, 12<<20)})
	const idle = noStallIdle
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: idle})
	if err := reportsErr(c.Pickup(context.Background(), e.Resolve("alpha"))); err != nil {
		t.Fatal(err)
	}
	a := h.arm(&stallAt{match: func(r sftptest.Request) bool { return r.Extended == "fsync@openssh.com" }, act: func(sftptest.Request) {
		time.Sleep(idle + idle/2)
	}})
	e.dropoffNoStall(t, c, h, "a slow fsync", a.fired.Load)
}

// dropoffNoStall runs a dropoff to beta through h's action, which a host
// slow but well plays (what): the dropoff must deliver everything, and the
// action must have fired.
func (e *env) dropoffNoStall(t *testing.T, c *carrier.Carrier, h *stallHook, what string, fired func() bool) {
	t.Helper()
	rs, _ := c.Dropoff(context.Background(), e.Resolve("beta"))
	if err := reportsErr(rs); err != nil {
		t.Fatalf("%s taken for a stall: %v", what, err)
	}
	if h.arm(nil); !fired() {
		t.Fatalf("%s never came", what)
	}
	e.world.CheckSettled(t, c.Buffer())
}

// TestStallHostStopsAnswering: a host whose SFTP server stops answering in
// the middle of a transfer (a read of a pickup, a write of a dropoff)
// while its SSH server answers keepalives. Each run ends on its own with
// ErrStalled naming the host and the file, keeps what moved, and the
// next runs move the rest.
func TestStallHostStopsAnswering(t *testing.T) {
	t.Parallel()
	e, h := newStallEnv(t)
	r := rand.New(rand.NewSource(16))
	e.send("alpha", "beta", map[string][]byte{"mute/big.bin": randBytes(r, 6<<20), "mute/small.txt": []byte("small\n")})
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: 2 * time.Second})
	a := h.arm(&stallAt{at: 12, match: func(r sftptest.Request) bool { return r.Type == sftptest.FxpRead }})
	stallRun(t, "alpha", "big.bin", pickupRun(c, e))
	if h.arm(nil); !a.fired.Load() {
		t.Fatal("the pickup never read")
	}
	e.world.Check(t, c.Buffer())
	if err := reportsErr(c.Pickup(context.Background(), e.Resolve("alpha"))); err != nil {
		t.Fatalf("the pickup after the stall: %v", err)
	}
	a = h.arm(&stallAt{at: 12, match: func(r sftptest.Request) bool { return r.Type == sftptest.FxpWrite }})
	stallRun(t, "beta", protocol.InboxDir("alpha"), dropoffRun(c, e))
	if h.arm(nil); !a.fired.Load() {
		t.Fatal("the dropoff never wrote")
	}
	e.world.Check(t, c.Buffer())
	e.settle(t, c)
}

// TestStallFsyncHoldsOtherLanes: a host whose disk, while it flushes one
// lane's fsync for longer than the idle timeout, holds every other lane's
// requests too (a journal commit on a slow SD card): no byte comes on any
// channel, yet the host is busy, not stalled, and the dropoff delivers all.
func TestStallFsyncHoldsOtherLanes(t *testing.T) {
	t.Parallel()
	e, h := newStallEnv(t)
	e.sendForLanes(18, "lanes", 16<<10)
	const idle = noStallIdle
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: idle})
	if err := reportsErr(c.Pickup(context.Background(), e.Resolve("alpha"))); err != nil {
		t.Fatal(err)
	}
	var disk sync.RWMutex
	var held atomic.Bool
	var fsyncs atomic.Int32
	h.arm(&stallAt{match: func(sftptest.Request) bool { return true }, act: func(r sftptest.Request) {
		if r.Extended == "fsync@openssh.com" && fsyncs.Add(1) == 8 {
			disk.Lock()
			held.Store(true)
			time.Sleep(idle + idle/4)
			disk.Unlock()
			return
		}
		disk.RLock()
		disk.RUnlock()
	}})
	e.dropoffNoStall(t, c, h, "a disk busy with one lane's fsync", held.Load)
}

// TestStallFIFOLedger: the source's ledger for a destination is a FIFO
// (sftp-server's open of it would block). The visit that would hand the
// receipts over is not held up by it: the hand-over waits, naming the
// ledger, the rest of the visit succeeds, nothing is lost, and once the
// FIFO is gone the next visit hands the receipts over.
func TestStallFIFOLedger(t *testing.T) {
	t.Parallel()
	e, _ := newStallEnv(t)
	r := rand.New(rand.NewSource(19))
	e.send("alpha", "beta", map[string][]byte{"ledger/a.txt": randBytes(r, 3000)})
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: 2 * time.Second})
	ctx := context.Background()
	if err := reportsErr(c.Pickup(ctx, e.Resolve("alpha"))); err != nil {
		t.Fatal(err)
	}
	if rs, _ := c.Dropoff(ctx, e.Resolve("beta")); reportsErr(rs) != nil {
		t.Fatal(reportsErr(rs))
	}
	ledger := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.LedgerPath("beta")))
	if err := os.MkdirAll(filepath.Dir(ledger), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(ledger, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unblockFIFO(ledger) })
	vctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	rs := c.Pickup(vctx, e.Resolve("alpha"))
	cancel()
	if err := reportsErr(rs); err != nil {
		t.Fatalf("a FIFO as the ledger failed the visit: %v", err)
	}
	if w := fmt.Sprint(rs[0].Waiting); !strings.Contains(w, "not a regular file") || !strings.Contains(w, protocol.Sent) {
		t.Fatalf("the visit does not say the ledger is no regular file: %s", w)
	}
	e.world.Check(t, c.Buffer())
	unblockFIFO(ledger)
	os.Remove(ledger)
	if err := reportsErr(c.Pickup(ctx, e.Resolve("alpha"))); err != nil {
		t.Fatalf("the visit after the FIFO went: %v", err)
	}
	if b, err := os.ReadFile(ledger); err != nil || !strings.Contains(string(b), "ledger/a.txt") {
		t.Fatalf("the receipt was not handed over: %q, %v", b, err)
	}
	e.world.CheckSettled(t, c.Buffer())
}

// TestStallSlowLaneStart: a host slow to start the SFTP server of each lane
// (a login shell slow to start, on a loaded host) is not taken for
// stalled: a lane's start is bounded by the connect timeout, which gives
// it up and goes on with fewer, never by the idle timeout, which would give
// up the whole session.
func TestStallSlowLaneStart(t *testing.T) {
	t.Parallel()
	e, h := newStallEnv(t)
	e.sendForLanes(20, "slowlane", 2000)
	const idle = noStallIdle
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: idle, ConnectTimeout: 4 * idle})
	a := &stallAt{match: func(r sftptest.Request) bool { return r.Type == 1 }} // SSH_FXP_INIT
	a.act = func(sftptest.Request) {
		if a.n.Load() > 1 { // the session's own channel starts at once
			time.Sleep(idle + idle/2)
		}
	}
	h.arm(a)
	if err := reportsErr(c.Pickup(context.Background(), e.Resolve("alpha"))); err != nil {
		t.Fatalf("lanes slow to start taken for a stall: %v", err)
	}
	if h.arm(nil); a.n.Load() < 2 {
		t.Fatal("the pickup opened no lane")
	}
	e.world.Check(t, c.Buffer())
}

// sendForLanes sends 80 files of size bytes (seeded) in dir from alpha to
// beta: more than manyFiles, so that a visit moves them over four lanes.
func (e *env) sendForLanes(seed int64, dir string, size int) {
	r := rand.New(rand.NewSource(seed))
	files := map[string][]byte{}
	for i := range 80 {
		files[dir+"/f"+strconv.Itoa(i)] = randBytes(r, size)
	}
	e.send("alpha", "beta", files)
}

// TestStallBatchOverSlowLink: over a slow link (512 KiB/s, 80 ms) a batched
// pickup's archive streams from the exec helper while a lane waits for an
// SFTP reply (big.bin's fstat) queued behind that stream. The link is well
// and busy: the pickup is no stall, and carries everything.
func TestStallBatchOverSlowLink(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	e.sendForLanes(22, "slowbatch", 40<<10)
	r := rand.New(rand.NewSource(23))
	e.send("alpha", "beta", map[string][]byte{"slowbatch/big.bin": randBytes(r, 6<<20)})
	c := e.carrier(1<<30, carrier.Options{IdleTimeout: 2 * time.Second})
	p := e.proxy("alpha")
	p.SetRate(512 << 10)
	p.SetLatency(80 * time.Millisecond)
	if err := reportsErr(c.Pickup(context.Background(), e.Resolve("alpha"))); err != nil {
		t.Fatalf("a batch streaming over a slow link taken for a stall: %v", err)
	}
	e.world.Check(t, c.Buffer())
	if n := len(e.OutboxFiles("alpha")); n != 0 {
		t.Fatalf("%d files left in the outbox", n)
	}
}
