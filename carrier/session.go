package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/protocol"
)

// DefaultConnectTimeout bounds connect and handshake when neither the
// options nor ssh_config say otherwise.
const DefaultConnectTimeout = 5 * time.Second

// sftpStartTimeout bounds starting SFTP once the host has logged the
// carrier in, when the connect timeout is shorter: sshd starts
// sftp-server through the user's login shell, whose init files (pyenv,
// conda, nvm) may take seconds on a loaded host that is plainly there.
var sftpStartTimeout = 30 * time.Second

// maxPacket is the SFTP data size per request, and maxInFlight the requests
// outstanding per file: 1 MiB in flight, enough for a fast Wi-Fi link's
// bandwidth-delay product. More is lost when a link drops: with 255 KiB
// packets (OpenSSH's sftp-server takes messages up to 256 KiB) and 16 in
// flight, the SSH window (2 MiB) filled up and a link cut every 2 MiB sent
// 1.2x to 1.75x the payload over the air; with 1 MiB in flight it is 1.05x,
// at the same loopback throughput (internal/faults TestFlakyWiFi).
//
// Uploads keep half as much in flight (maxWritesInFlight), over the whole
// session, not per file (writeWindowed): what sshd has received but not yet
// handed to sftp-server is lost when the link drops, and with 1 MiB in
// flight a 2 MiB-cut link carried 1.4x the payload; with 512 KiB, 1.1x, and
// loopback uploads were no slower (four files of 48 MiB: no slower with
// 512 KiB for the session than with 512 KiB for each file).
const (
	maxPacket         = 128 * 1024
	maxInFlight       = 8
	maxWritesInFlight = 4
)

// Uploads keep at most maxWritesInFlight packets in flight over a whole
// session, whatever the number of files (writeWindowed); windowUnits is
// that window, in units that both shapes divide. Over a link that was cut
// before, chunks of flakyChunk, at most flakyInFlight in flight in all:
// what crossed the link but was not yet written by the host when the link
// drops is lost, and a link cut every MiB then carried 1.06x to 1.2x the
// payload (internal/faults TestFlakyLinkProgress).
const (
	windowUnits   = 8
	flakyChunk    = 64 << 10
	flakyInFlight = 2
)

// UnreachableError: the host did not answer (out of range). Not a failure.
type UnreachableError struct {
	Host string
	Addr string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("host %s (%s): not reachable: %v", e.Host, e.Addr, e.Err)
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// AuthError: the host refused every key we offered.
type AuthError struct {
	Host, User string
	Err        error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("host %s: login as %s refused: %v (is this carrier's public key in the host's authorized_keys?)", e.Host, e.User, e.Err)
}
func (e *AuthError) Unwrap() error { return e.Err }

// tooManyTries: the server cut the login short after MaxAuthTries refused
// keys, so later keys were never offered (sshd says "Too many ...", a Go
// server, as messor agent, "too many ...").
func tooManyTries(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "too many authentication failures")
}

// Session is an SSH connection with an SFTP client to one host. Lanes
// (see lanes) are views of it with SFTP channels of their own.
type Session struct {
	*sessionState
	sftp  *sftp.Client
	watch *sftpWatch // the requests and replies of this SFTP channel
}

// sessionState is what every lane of a session shares.
type sessionState struct {
	Host discovery.Host
	ssh  *ssh.Client
	log  *slog.Logger

	laneMu sync.Mutex
	lanes  []*Session // openLanes: [0] is the session itself

	hasFsync bool
	// noDirSync: the host refused to open or sync a directory
	// (errNotDurable), so the session does not ask again.
	noDirSync atomic.Bool
	// noReplace: putting a file in place (place) never replaces another:
	// our agent's rename, OpenSSH sftp-server's rename (link+unlink), or
	// a hard link where the server offers one.
	noReplace bool
	// useLink: place with hardlink@openssh.com, then remove the partial.
	useLink bool
	// rwHandles: a handle opened for reading and writing serves both
	// (OpenSSH's sftp-server, our agent; some servers take a read on a
	// write handle for a write).
	rwHandles bool
	agent     bool

	capsOnce  sync.Once
	hostCaps  *hostCaps   // caps: probed on first use
	capsKnown atomic.Bool // hostCaps is set: the probe has answered
	// helperOpen is closed once the probe holds the exec helper's session
	// or will not open one (helperOpened).
	helperOpen     chan struct{}
	helperOpenOnce sync.Once
	rtt            time.Duration // one SFTP round trip, measured at the start
	// execs bounds the commands run on the host at once (sshd's
	// MaxSessions is 10 by default, and SFTP lanes take up to maxLanes).
	execs chan struct{}
	// sliceRefused: the agent refused a hash-slice request (an agent older
	// than that request); whole files are verified instead.
	sliceRefused atomic.Bool
	// sliceRequest is protocol.HashSliceRequest (tests name another, to
	// play an older agent).
	sliceRequest string
	probeGate    func() // test hook: called before the probe (Carrier.probeGate)
	// hashBatch joins the agent hashes of small files (agentHasher).
	hashBatch hashBatcher

	// cutBefore: a partial of ours was found, so an earlier run's link
	// was cut; transfers then keep little in flight (writeWindowed,
	// readWindowed). window bounds the upload chunks in flight over all
	// lanes (acquireWindow).
	cutBefore atomic.Bool
	window    chan struct{}
	windowMu  sync.Mutex

	conn      *activityConn
	rx        *rxBudget
	stopWatch chan struct{}
	closeOnce sync.Once
	stallWhy  atomic.Pointer[string] // what the idle watch saw, once stalled (nil: not stalled)
	hashMu    sync.Mutex             // the agent's hash requests go one at a time (askHash)
	busyMu    sync.Mutex
	busyN     int       // hashes the host is busy with for us (expectBusy)
	busyUntil time.Time // until then, while busyN > 0, the host may be silent

	watchMu    sync.Mutex
	watches    map[*sftpWatch]bool // the SFTP channels open, lanes included
	sftpShared sftpShared          // what the watches share
}

// DefaultIdleTimeout is how long a session may go without a byte from the
// host, or with SFTP requests outstanding and no reply to any, before the
// carrier gives up on it (Options.IdleTimeout).
const DefaultIdleTimeout = 30 * time.Second

// ErrStalled: the host sent nothing, not even a keepalive reply, or
// answered no SFTP request, for the idle timeout. What was moved before is
// kept; the next run resumes.
var ErrStalled = errors.New("link stalled")

// activityConn remembers when a byte last arrived.
type activityConn struct {
	net.Conn
	last monoStamp
}

func (c *activityConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.touch()
	}
	return n, err
}

func (c *activityConn) quiet() time.Duration {
	return c.last.since()
}

// watchIdle closes the session when the host has sent nothing for idle, or
// when one of its SFTP channels has had requests outstanding and no reply
// for idle (sftpWatch): a stalled link (walked out of Wi-Fi range, a dead
// NAT mapping) or an SFTP server blocked for good (a FIFO, a hung mount)
// otherwise hangs a transfer forever, since neither TCP nor SSH notices.
// While the session is quiet for other reasons (local hashing) a
// keepalive@openssh.com request draws a reply, which counts as life for
// the link, never for SFTP requests outstanding. A host hashing a big file
// for us (expectBusy) may be silent until it answers (at most its bound),
// and an fsync for as long as its size allows (syncTime). idle <= 0
// disables the watch.
func (s *Session) watchIdle(idle time.Duration) {
	if idle <= 0 {
		return
	}
	tick := max(idle/4, time.Millisecond) // a ticker needs a positive interval
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		var pending atomic.Bool
		last, judge := time.Now(), time.Time{}
		for {
			select {
			case <-s.stopWatch:
				return
			case <-t.C:
			}
			now := time.Now()
			if now.Sub(last) > 2*tick {
				// The watch was not running (the carrier stopped, as by
				// Ctrl-Z, or starved of CPU): what the host sent meanwhile
				// waits for readers that have not run yet. Judge a tick
				// later (TestSuspendedCarrier).
				judge = now.Add(tick)
			}
			if last = now; now.Before(judge) {
				continue
			}
			busy := s.hostBusy(now)
			quiet := s.conn.quiet()
			if busy {
				// The host is hashing a big file for us; its reply
				// to a keepalive may wait behind that one.
			} else if quiet >= idle {
				s.giveUp(fmt.Sprintf("no data for %v", idle), "quiet", quiet.Round(time.Millisecond))
				return
			} else if what, ok := s.sftpStalled(now, idle); ok {
				s.giveUp(fmt.Sprintf("no SFTP reply for %v (waiting on %s)", idle, what))
				return
			}
			if quiet >= tick && pending.CompareAndSwap(false, true) {
				go func() {
					defer pending.Store(false)
					s.ssh.SendRequest("keepalive@openssh.com", true, nil)
				}()
			}
		}
	}()
}

// expectBusy tells the idle watch that the host may be silent for d, until
// done is called (its reply came): a hash answered early leaves the watch
// as it was (TestStallAfterHostHashed).
func (s *Session) expectBusy(d time.Duration) (done func()) {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	s.busyN++
	s.busyUntil = later(s.busyUntil, time.Now().Add(d))
	return func() {
		s.busyMu.Lock()
		defer s.busyMu.Unlock()
		if s.busyN--; s.busyN == 0 {
			s.busyUntil = time.Time{}
		}
	}
}

// hostBusy reports whether the host may be silent at now, hashing for us.
func (s *Session) hostBusy(now time.Time) bool {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	return s.busyN > 0 && now.Before(s.busyUntil)
}

// giveUp closes the stalled session, keeping why for its error.
func (s *Session) giveUp(why string, args ...any) {
	s.log.Warn("giving up on the session: "+why, args...)
	s.stallWhy.Store(&why)
	s.Close()
}

// StallReason says what the idle watch saw ("" while not stalled).
func (s *Session) StallReason() string {
	if p := s.stallWhy.Load(); p != nil {
		return *p
	}
	return ""
}

// sftpStalled reports whether one of the session's SFTP channels stalled,
// and the request it waits on.
func (s *Session) sftpStalled(now time.Time, idle time.Duration) (string, bool) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	var busy time.Time
	for w := range s.watches {
		busy = later(busy, w.flushing(idle))
	}
	for w := range s.watches {
		if what, ok := w.stalled(now, idle, busy); ok {
			return what, true
		}
	}
	return "", false
}

// addWatch has watchIdle follow an SFTP channel's watch until dropWatch.
func (s *sessionState) addWatch(w *sftpWatch) {
	s.watchMu.Lock()
	s.watches[w] = true
	s.watchMu.Unlock()
}

// dropWatch stops following a channel closed or given up.
func (s *sessionState) dropWatch(w *sftpWatch) {
	w.retire()
	s.watchMu.Lock()
	delete(s.watches, w)
	s.watchMu.Unlock()
}

// rxBudget counts the bytes of SFTP replies and, while armed, calls trip
// once more than budget bytes have arrived.
type rxBudget struct {
	r      io.Reader
	mu     sync.Mutex
	left   int64
	trip   func()
	armed  bool
	busted bool
}

func (b *rxBudget) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.mu.Lock()
	if b.armed {
		b.left -= int64(n)
		if b.left < 0 && !b.busted {
			b.busted = true
			b.trip()
		}
	}
	b.mu.Unlock()
	return n, err
}

// arm starts counting against budget; disarm stops and reports the bytes
// left (negative: over budget, and trip was called).
func (b *rxBudget) arm(budget int64, trip func()) {
	b.mu.Lock()
	b.left, b.trip, b.armed, b.busted = budget, trip, true, false
	b.mu.Unlock()
}

func (b *rxBudget) disarm() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	return b.left
}

// Stalled reports whether the idle watch closed the session.
func (s *Session) Stalled() bool { return s.stallWhy.Load() != nil }

// Dial connects to h along its route (see route.go; jump hosts' keys are
// checked with HostKeyPolicy(hop, false)), checks its host key
// with policy, logs in with signers, and starts SFTP. The connect and
// handshake are bounded by h.ConnectTimeout (or timeout when that is 0) and
// by ctx.
func Dial(ctx context.Context, h discovery.Host, policy ssh.HostKeyCallback, signers func() ([]ssh.Signer, error), timeout time.Duration, log *slog.Logger) (*Session, error) {
	return dial(ctx, h, policy, strictHops, signers, timeout, log)
}

// strictHops checks a jump host's key against its known_hosts files.
func strictHops(hop discovery.Host) ssh.HostKeyCallback { return HostKeyPolicy(hop, false) }

// dial is Dial, with hops checking the jump hosts' keys.
func dial(ctx context.Context, h discovery.Host, policy ssh.HostKeyCallback, hops hopPolicy, signers func() ([]ssh.Signer, error), timeout time.Duration, log *slog.Logger) (*Session, error) {
	timeout = connectTimeout(h, timeout)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr := h.Addr()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialRoute(dctx, h, hops, log)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(dctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	cfg := &ssh.ClientConfig{
		User:            h.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeysCallback(signers)},
		HostKeyCallback: policy,
		Timeout:         timeout,
	}
	ac := &activityConn{Conn: conn}
	ac.last.touch()
	c, chans, reqs, err := ssh.NewClientConn(ac, addr, cfg)
	if err != nil {
		stop()
		conn.Close()
		return nil, handshakeErr(h, err)
	}
	client := ssh.NewClient(c, chans, reqs)
	stop()
	timeout = max(timeout, sftpStartTimeout)
	dctx, cancel = context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline = time.Now().Add(timeout)
	conn.SetDeadline(deadline)
	stop = context.AfterFunc(dctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	// sftp.NewClient, spelled out so that the bytes the host sends can be
	// counted: pkg/sftp's ReadDir gathers a whole directory before it
	// returns, and only a byte budget bounds an endless one.
	rx := &rxBudget{}
	w := newSFTPWatch(nil)
	sc, err := newSFTP(context.Background(), client, w, func(r io.Reader) io.Reader { rx.r = r; return rx })
	// Starting SFTP is bounded by sftpStartTimeout (or the connect
	// timeout, if longer) and ctx: a host whose sftp-server never
	// answers must not hang us.
	if !stop() || dctx.Err() != nil {
		client.Close()
		if err == nil {
			err = dctx.Err()
		}
		if ctx.Err() == nil {
			// Our own deadline cut the connection: say so, rather than
			// the EOF it left behind.
			err = fmt.Errorf("no SFTP reply within %s: %w", timeout, err)
		}
		return nil, &UnreachableError{Host: h.Name, Addr: addr, Err: fmt.Errorf("starting SFTP: %w", err)}
	}
	if err != nil {
		client.Close()
		if isTimeout(err) || !time.Now().Before(deadline) {
			// The connection's deadline came before ctx's timer.
			return nil, &UnreachableError{Host: h.Name, Addr: addr, Err: fmt.Errorf("starting SFTP: no SFTP reply within %s: %w", timeout, err)}
		}
		return nil, fmt.Errorf("host %s: sftp: %w (does the host's sshd offer the sftp subsystem?)", h.Name, err)
	}
	conn.SetDeadline(time.Time{})
	s := &Session{sessionState: &sessionState{Host: h, ssh: client, log: log.With("host", h.Name), conn: ac, stopWatch: make(chan struct{}), rx: rx, helperOpen: make(chan struct{}),
		execs: make(chan struct{}, maxExecs), window: make(chan struct{}, windowUnits), sliceRequest: protocol.HashSliceRequest,
		watches: map[*sftpWatch]bool{}}, sftp: sc, watch: w}
	w.mu.Lock()
	w.shared = &s.sftpShared
	w.mu.Unlock()
	s.watches[w] = true
	_, s.hasFsync = sc.HasExtension("fsync@openssh.com")
	// One round trip, timed: how many files to keep in flight.
	t0 := time.Now()
	if _, err := sc.Getwd(); err == nil {
		s.rtt = time.Since(t0)
	}
	s.agent = strings.Contains(string(c.ServerVersion()), protocol.AgentVersionTag)
	// What the SFTP server is, from what it offers (the SSH banner only
	// names sshd, not the SFTP server it runs): OpenSSH's sftp-server
	// offers fsync, fstatvfs and hardlink; pkg/sftp-based servers do not
	// offer the first two.
	has := func(ext string) bool { _, ok := sc.HasExtension(ext); return ok }
	openssh := has("fsync@openssh.com") && has("fstatvfs@openssh.com") && has("hardlink@openssh.com")
	s.useLink = !s.agent && !openssh && has("hardlink@openssh.com")
	s.noReplace = s.agent || openssh || s.useLink
	s.rwHandles = s.agent || openssh
	return s, nil
}

// newSFTP starts an SFTP client on a new channel of client, whose requests
// and replies w follows; wrap, if not nil, wraps what the host sends. If
// ctx ends first, the channel is closed and newSFTP returns.
func newSFTP(ctx context.Context, client *ssh.Client, w *sftpWatch, wrap func(io.Reader) io.Reader) (*sftp.Client, error) {
	sess, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	if err := sess.RequestSubsystem("sftp"); err != nil {
		sess.Close()
		return nil, err
	}
	pw, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	pr, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	var r io.Reader = watchedReader{r: pr, w: w}
	if wrap != nil {
		r = wrap(r)
	}
	sc, err := sftp.NewClientPipe(r, &privateCreates{w: watchedWriter{wc: pw, w: w}},
		sftp.UseConcurrentWrites(true),
		sftp.MaxPacketUnchecked(maxPacket),
		sftp.MaxConcurrentRequestsPerFile(maxInFlight),
		sftp.UseFstat(true),
	)
	if !stop() {
		// ctx ended, and the channel is closed or being closed.
		if sc != nil {
			sc.Close()
		}
		sess.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		sess.Close()
		return nil, err
	}
	return sc, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Close ends the session. It may be called more than once.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stopWatch)
		// The connection first: closing the SFTP channel sends a
		// message, which blocks forever on a stalled link.
		err = s.ssh.Close()
		s.sftp.Close()
		s.laneMu.Lock()
		for _, l := range s.lanes {
			if l.sftp != s.sftp {
				l.sftp.Close()
			}
		}
		s.laneMu.Unlock()
	})
	return err
}

// closeOnCancel closes the session when ctx ends (pkg/sftp ignores contexts),
// so Ctrl-C and timeouts cut a stuck transfer. Call the result to disarm.
func (s *Session) closeOnCancel(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { s.Close() })
}

// Signers returns the signers to offer to h: the dedicated key (see
// DedicatedKeyName) when present, then ssh-agent's (SSH_AUTH_SOCK), then
// h's identity files that parse without a passphrase. Call done once
// the handshake is over: it closes the connections to ssh-agent.
func Signers(h discovery.Host, log *slog.Logger) (signers func() ([]ssh.Signer, error), done func()) {
	return keySigners(h, log, true)
}

// keySigners is Signers, with the dedicated key first or left out.
func keySigners(h discovery.Host, log *slog.Logger, dedicatedFirst bool) (signers func() ([]ssh.Signer, error), done func()) {
	var mu sync.Mutex
	var conns []net.Conn
	signers = func() ([]ssh.Signer, error) {
		var out []ssh.Signer
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			if conn, err := net.Dial("unix", sock); err == nil {
				mu.Lock()
				conns = append(conns, conn)
				mu.Unlock()
				if ss, err := agent.NewClient(conn).Signers(); err == nil {
					out = append(out, ss...)
				}
			}
		}
		for _, f := range h.IdentityFiles {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			s, err := ssh.ParsePrivateKey(b)
			if err != nil {
				if log != nil {
					log.Debug("identity file skipped", "file", f, "err", err)
				}
				continue
			}
			out = append(out, s)
		}
		return withDedicatedKey(out, dedicatedSigner(log), dedicatedFirst), nil
	}
	done = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	return signers, done
}

// place puts the finished partial at final without ever replacing a file
// there: an error if final exists. With useLink, a hard link then removal
// of the partial (falling back to a rename where the host's filesystem has
// no hard links and final is free).
func (s *Session) place(partial, final string) error {
	if !s.useLink {
		return s.sftp.Rename(partial, final)
	}
	if err := s.sftp.Link(partial, final); err != nil {
		if _, serr := s.sftp.Lstat(final); !errors.Is(serr, fs.ErrNotExist) {
			return err // taken (or cannot tell): never replace
		}
		return s.sftp.Rename(partial, final)
	}
	// Trust, but look: the link must be there, as big as the partial,
	// before the partial goes.
	pst, perr := s.sftp.Lstat(partial)
	fst, ferr := s.sftp.Lstat(final)
	if perr == nil && errors.Is(ferr, fs.ErrNotExist) {
		// A server that says yes to a link it does not make: the name is
		// free, so rename as where there are no hard links.
		return s.sftp.Rename(partial, final)
	}
	if perr != nil || ferr != nil || !fst.Mode().IsRegular() || fst.Size() != pst.Size() {
		return fmt.Errorf("host %s: link %s: the server said yes, but the link is not there", s.Host.Name, final)
	}
	if err := s.sftp.Remove(partial); err != nil {
		s.log.Warn("delivered, but the partial stays", "path", partial, "err", err)
	}
	return nil
}

// syncDir makes the entries of the directory dir durable (a file just put
// in place there, a directory just made): it opens dir for reading and
// sends fsync@openssh.com on that handle, which OpenSSH's sftp-server and
// the agent honour. It returns an error wrapping errNotDurable where the
// host offers no fsync or refuses it on a directory.
func (s *Session) syncDir(dir string) error {
	if !s.hasFsync || s.noDirSync.Load() {
		return errNotDurable
	}
	f, err := s.sftp.OpenFile(dir, os.O_RDONLY)
	if err == nil {
		err = f.Sync()
		if cerr := f.Close(); err == nil && !errors.Is(cerr, sftp.ErrSSHFxConnectionLost) {
			err = cerr
		}
	}
	var st *sftp.StatusError
	if err != nil && errors.As(err, &st) {
		// Refused (an agent older than directory syncs cannot open a
		// directory; another server may not sync one): not this
		// directory's fault, and the same for every other.
		s.noDirSync.Store(true)
		s.log.Info("the host does not sync directories; delivered files wait for a later visit to be released", "path", dir, "err", err)
		return fmt.Errorf("host %s: sync %s: %w: %w", s.Host.Name, dir, errNotDurable, err)
	}
	if err != nil {
		return fmt.Errorf("host %s: sync %s: %w", s.Host.Name, dir, err)
	}
	return nil
}
