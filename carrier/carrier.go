package carrier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/protocol"
	"github.com/pkg/sftp"
)

// Options configure a Carrier.
type Options struct {
	// AcceptNew pins unknown host keys on first contact.
	AcceptNew bool
	// ConnectTimeout bounds connect and handshake per host (default
	// DefaultConnectTimeout; ssh_config ConnectTimeout wins).
	ConnectTimeout time.Duration
	// IdleTimeout: a host that sends nothing (not even a keepalive reply),
	// or answers none of the SFTP requests outstanding, for this long is
	// given up on, so a stalled link or SFTP server ends the run instead of
	// hanging it (see watchIdle). Default DefaultIdleTimeout; negative
	// disables.
	IdleTimeout time.Duration
	// MaxListing bounds how many outbox entries one listing holds, so an
	// enormous or hostile directory cannot exhaust memory; a bigger outbox
	// is carried in rounds (default 100,000).
	MaxListing int
	// MaxRounds bounds the listing rounds of one visit, so a writer that
	// keeps an outbox over MaxListing entries fed faster than it is
	// carried (with content already carried, which takes no buffer room)
	// cannot keep the visit going for ever (default 1,000).
	MaxRounds int
	// Settle: a source file modified less than this long ago is still being
	// written and waits for the next visit. Default 5s; negative disables.
	Settle time.Duration
	// Workers is the number of files in flight per host. Many small
	// files hide the link's round trips behind each other; on a fast
	// local link more only contend. Default: chosen per host from the
	// measured round trip (32 on a link under 2 ms, 192 beyond).
	Workers int
	// BigWorkers bounds how many of them may be big files (default 4),
	// which each keep about 1 MiB of requests in flight: memory stays
	// bounded and the link is shared by few streams.
	BigWorkers int
	// Lanes is how many SFTP channels a run with a host uses for many
	// files (default and most 4; 1 for a run of fewer than 64 files).
	Lanes int
	// Progress, if set, is told about transfers.
	Progress Progress
	// Logger gets per-file detail. Nil discards.
	Logger *slog.Logger
	// HostKeyPolicy overrides the known_hosts policy (tests, pinned agents).
	HostKeyPolicy func(h discovery.Host, acceptNew bool) ssh.HostKeyCallback
	// VerifySource compares the carried copy with a hash computed by the
	// source host when it is a messor agent (a cheap request there; on a
	// stock host it would cost a process per file, and size, mtime and
	// SSH's own integrity checks already guard the read). A resumed
	// download is verified on every kind of host whatever this says.
	VerifySource bool
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
	// VerifySlice: a file of at least two slices of this many bytes is
	// verified slice by slice while it is being uploaded, on hosts that
	// hash for us (a messor agent, or a stock host that runs a hash
	// command), so that little is left to hash once the last byte is sent.
	// Rounded up to a multiple of 1 MiB; default 32 MiB; negative: files
	// are verified whole after their last byte.
	VerifySlice int64
	// Passphrase, if set, is asked once per run for a passphrase-protected
	// key file that ssh-agent does not hold (on a terminal, as ssh does).
	Passphrase func(file string) ([]byte, error)
	// OnPin, if set, is told of each host key pinned on first contact
	// (AcceptNew, or ssh_config's StrictHostKeyChecking accept-new) by the
	// default HostKeyPolicy.
	OnPin func(PinNote)
	// DryRun: PickupFound, PickupFrom and DropoffTo connect and say what
	// they would move and what would wait, moving nothing.
	DryRun bool
	// AllowRemote: visit hosts at addresses not on a local network
	// (discovery.LocalAddr) even when the hosts file does not mark them
	// "remote" (see guardNetwork).
	AllowRemote bool
	// IsLocal, if set, replaces discovery.LocalAddr as the test of an
	// address on a local network (tests use it to make a loopback
	// address remote).
	IsLocal func(netip.Addr) bool
	// Metered, if set, says whether the connection is metered (and by
	// what); a metered one stops every visit unless AllowMetered.
	Metered      func(ctx context.Context) (metered bool, by string)
	AllowMetered bool
	// Lease is how long a file carried from an outbox in keep mode is
	// leased to this carrier: other carriers leave that version alone
	// until then (default DefaultLease).
	Lease time.Duration
	// ReceiptMaxAge: receipts older than this leave destinations and the
	// buffer, home or not (default DefaultReceiptMaxAge).
	ReceiptMaxAge time.Duration
}

// Progress receives transfer progress; implementations must be safe for
// concurrent use.
type Progress interface {
	// Start announces a transfer of files totalling bytes with a host;
	// verb is "pickup" or "dropoff". Add is then called with byte counts,
	// and Done once.
	Start(host, verb string, files int, bytes int64) Tracker
}

// Tracker follows one host's transfer.
type Tracker interface {
	// Add: n bytes moved now.
	Add(n int64)
	// Resumed: n bytes of the total were moved by an earlier run (a
	// partial resumed) and will not cross the link now.
	Resumed(n int64)
	// FileDone: one more of the files is finished (moved, found done,
	// or failed).
	FileDone()
	Done()
}

// Carrier moves files between hosts through its Buffer.
type Carrier struct {
	buf  *Buffer
	opts Options
	log  *slog.Logger

	// Test hooks (export_test.go). sliceWritten is called once a slice of
	// an upload verified slice by slice has been written, before the host
	// hashes it; sliceRequest, if set, replaces protocol.HashSliceRequest
	// on the carrier's sessions (a name an agent does not know plays an
	// older agent); batchRequest likewise replaces
	// protocol.HashBatchRequest; probeGate is called by each session
	// before it probes the host's capabilities.
	sliceWritten func(partial string, start, end int64)
	probeGate    func()
	sliceRequest string
	batchRequest string

	keys unlocked // passphrase-protected keys unlocked this run
}

// New makes a carrier over an open buffer.
func New(buf *Buffer, opts Options) *Carrier {
	if opts.BigWorkers <= 0 {
		opts.BigWorkers = 4
	}
	if opts.Settle == 0 {
		opts.Settle = 5 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxListing <= 0 {
		opts.MaxListing = defaultMaxListing
	}
	if opts.MaxRounds <= 0 {
		opts.MaxRounds = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.ReceiptMaxAge <= 0 {
		opts.ReceiptMaxAge = DefaultReceiptMaxAge
	}
	switch {
	case opts.VerifySlice == 0:
		opts.VerifySlice = defaultVerifySlice
	case opts.VerifySlice > 0:
		opts.VerifySlice = (opts.VerifySlice + protocol.HashBlock - 1) / protocol.HashBlock * protocol.HashBlock
	}
	if opts.HostKeyPolicy == nil {
		onPin := opts.OnPin
		opts.HostKeyPolicy = func(h discovery.Host, acceptNew bool) ssh.HostKeyCallback {
			return hostKeyPolicy(h, acceptNew, onPin)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	buf.SetLogger(log)
	return &Carrier{buf: buf, opts: opts, log: log}
}

// Buffer is the carrier's buffer.
func (c *Carrier) Buffer() *Buffer { return c.buf }

// HostReport says what happened with one host in one run.
type HostReport struct {
	Host    string
	Verb    string // "pickup" or "dropoff"
	Err     error  // the host as a whole: unreachable, refused, failed
	Files   int    // files moved
	Bytes   int64  // bytes moved
	Already int    // files found done already (carried, or delivered)
	Dedup   int    // files whose content was stored already
	// Receipts: delivered files written into this host's ledgers;
	// Collected: receipt files taken from this host for other sources;
	// Kept: files carried and left in a keep-mode outbox under a lease;
	// Released: keep-mode files a receipt removed from this host.
	Receipts, Collected, Kept, Released int
	// Waiting: files left for a later visit (over the limit, still being
	// written); Skipped: files that will never be carried as they are
	// (bad names, symlinks, special files); Failed: per-file errors.
	Waiting []FileNote
	Skipped []FileNote
	Failed  []FileNote
	Elapsed time.Duration
	// Resumed: bytes of Bytes moved by an earlier visit (partials
	// resumed); they did not cross the link in Elapsed.
	Resumed int64
	// DryRun: Files and Bytes are what would have moved.
	DryRun bool
	// NoOutbox: the pickup host has no messor/outbox/ at all.
	NoOutbox bool
	// Interrupted: the run was cancelled during this visit; Err, if
	// any, is a consequence, not the host's doing.
	Interrupted bool
	// NothingCarried: a destination named for a dropoff that the buffer
	// holds nothing for; it was not visited.
	NothingCarried bool
}

// FileNote is one file's fate.
type FileNote struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Unreachable reports whether the host was simply out of range.
func (r *HostReport) Unreachable() bool {
	var ue *UnreachableError
	return errors.As(r.Err, &ue)
}

// Failed reports whether this host's run counts as a failure (exit 1):
// refused, or a transfer failed. Out of range is not a failure.
func (r *HostReport) Failure() bool {
	return (r.Err != nil && !r.Unreachable() && !r.Misconfigured() && !r.Held()) || len(r.Failed) > 0
}

// Misconfigured reports whether the host was refused for its configuration
// (~/.ssh/config asks for something messor does not do): a usage error
// (exit 2), not a failed visit.
func (r *HostReport) Misconfigured() bool {
	var uo *discovery.UnsupportedOptionError
	return errors.As(r.Err, &uo)
}

// Summary is one line for people.
func (r *HostReport) Summary() string {
	if r.Interrupted {
		return fmt.Sprintf("%s: %s: interrupted after %d file(s), %s; what was moved is kept, the rest resumes next time", r.Verb, r.Host, r.Files, FormatSize(r.Bytes))
	}
	if r.Err != nil {
		if r.Unreachable() {
			return r.unreachableSummary()
		}
		if he := r.held(); he != nil {
			return fmt.Sprintf("%s: %s: skipped: %v", r.Verb, r.Host, he)
		}
		return fmt.Sprintf("%s: %s: %v", r.Verb, r.Host, r.Err)
	}
	verb := "picked up"
	switch {
	case r.DryRun && r.Verb == "dropoff":
		verb = "would deliver"
	case r.DryRun:
		verb = "would pick up"
	case r.Verb == "dropoff":
		verb = "delivered"
	}
	var b strings.Builder
	if r.NothingCarried {
		return fmt.Sprintf("%s: %s: nothing carried for it", r.Verb, r.Host)
	}
	if r.NoOutbox {
		return fmt.Sprintf("%s: %s: %s", r.Verb, r.Host, noOutboxHint)
	}
	fmt.Fprintf(&b, "%s: %s: %s %d file(s), %s", r.Verb, r.Host, verb, r.Files, FormatSize(r.Bytes))
	if moved := r.Bytes - r.Resumed; r.Elapsed > 0 && moved > 0 {
		fmt.Fprintf(&b, " in %s (%s/s", r.Elapsed.Round(time.Millisecond), FormatSize(int64(float64(moved)/r.Elapsed.Seconds())))
		if r.Resumed > 0 {
			fmt.Fprintf(&b, "; %s of it moved on an earlier visit", FormatSize(r.Resumed))
		}
		b.WriteString(")")
	}
	if r.Already > 0 {
		fmt.Fprintf(&b, "; %d already done", r.Already)
	}
	if r.Dedup > 0 {
		fmt.Fprintf(&b, "; %d with content already carried", r.Dedup)
	}
	if r.Kept > 0 {
		fmt.Fprintf(&b, "; %d kept in the outbox until a receipt comes back", r.Kept)
	}
	if r.Receipts+r.Released > 0 {
		fmt.Fprintf(&b, "; %d receipt(s) home, %d kept file(s) removed by them", r.Receipts, r.Released)
	}
	if n := len(r.Waiting); n > 0 {
		fmt.Fprintf(&b, "; %d waiting (%s)", n, reasons(r.Waiting))
	}
	if n := len(r.Skipped); n > 0 {
		fmt.Fprintf(&b, "; %d skipped (%s)", n, reasons(r.Skipped))
	}
	if n := len(r.Failed); n > 0 {
		fmt.Fprintf(&b, "; %d FAILED", n)
	}
	return b.String()
}

func reasons(ns []FileNote) string {
	count := map[string]int{}
	for _, n := range ns {
		count[n.Reason]++
	}
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", count[k], k))
	}
	return strings.Join(parts, ", ")
}

// dial opens a session to h with the carrier's policies.
func (c *Carrier) dial(ctx context.Context, h discovery.Host) (*Session, error) {
	if err := c.checkMetered(ctx, h); err != nil {
		return nil, err
	}
	hops := func(hop discovery.Host) ssh.HostKeyCallback {
		return c.guardNetwork(h, c.opts.HostKeyPolicy(hop, c.opts.AcceptNew))
	}
	s, err := dialWithExtraKeys(ctx, h, c.guardNetwork(h, c.opts.HostKeyPolicy(h, c.opts.AcceptNew)), hops, c.opts.ConnectTimeout, c.log, c.unlockKeys(h))
	var ae *AuthError
	if errors.As(err, &ae) {
		return nil, c.keyError(h, ae)
	}
	if err != nil {
		return nil, err
	}
	if c.sliceRequest != "" {
		s.sliceRequest = c.sliceRequest
	}
	s.hashBatch.request = c.batchRequest
	s.probeGate = c.probeGate
	s.watchIdle(c.opts.IdleTimeout)
	return s, nil
}

// sessionErr is the error for a host as a whole once a run with it ended:
// a stalled link, or an interruption.
func (c *Carrier) sessionErr(ctx context.Context, s *Session, verb string) error {
	if s.Stalled() {
		return fmt.Errorf("host %s: %s: %s: %w; what was moved is kept and the next run resumes", s.Host.Name, verb, s.StallReason(), ErrStalled)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("host %s: %s interrupted: %w", s.Host.Name, verb, ctx.Err())
	}
	return nil
}

func (c *Carrier) tracker(host, verb string, files int, bytes int64) *resumeCounter {
	if c.opts.Progress == nil || files == 0 {
		return &resumeCounter{Tracker: nopTracker{}}
	}
	return &resumeCounter{Tracker: c.opts.Progress.Start(host, verb, files, bytes)}
}

// resumeCounter passes every call on and counts the bytes resumed, so
// that a report's rate is what crossed the link in its time.
type resumeCounter struct {
	Tracker
	n atomic.Int64
}

func (t *resumeCounter) Resumed(n int64) { t.n.Add(n); t.Tracker.Resumed(n) }

type nopTracker struct{}

func (nopTracker) Add(int64)     {}
func (nopTracker) Resumed(int64) {}
func (nopTracker) FileDone()     {}
func (nopTracker) Done()         {}

// bigFile is the size from which a transfer takes one of the BigWorkers
// slots.
const bigFile = 1 << 20

// slots hands out the BigWorkers slots for big files.
type slots chan struct{}

func (c *Carrier) bigSlots() slots { return make(slots, c.opts.BigWorkers) }

// take claims a slot if size needs one; the result gives it back.
func (s slots) take(ctx context.Context, size int64) (release func(), ok bool) {
	if size < bigFile {
		return func() {}, true
	}
	select {
	case s <- struct{}{}:
		return func() { <-s }, true
	case <-ctx.Done():
		return nil, false
	}
}

// workers is how many files to keep in flight with s.
func (c *Carrier) workers(s *Session) int {
	if c.opts.Workers > 0 {
		return c.opts.Workers
	}
	if s.rtt >= 2*time.Millisecond {
		return 192
	}
	return 32
}

// manyFiles is the number of files from which a run spreads them over
// several SFTP channels (Session.openLanes): below it, opening them costs
// more than they save.
const manyFiles = 64

// lanePicker hands out a run's lanes in turn, passing over lanes whose
// channel the host closed.
type lanePicker struct {
	lanes []*Session
	dead  []atomic.Bool
	next  atomic.Uint64
}

// lanes opens the lanes for a run of n files with s.
func (c *Carrier) lanes(ctx context.Context, s *Session, n int) *lanePicker {
	k := c.opts.Lanes
	if k <= 0 {
		k = maxLanes
		if n < manyFiles {
			k = 1
		}
	}
	if k > 1 {
		// The helper's session is taken before lanes take the host's;
		// they open while its shell starts.
		s.awaitHelperOpen(ctx)
	}
	lctx, cancel := context.WithTimeout(ctx, connectTimeout(s.Host, c.opts.ConnectTimeout))
	defer cancel()
	ls := s.openLanes(lctx, k)
	// On a host that hashes for us by command, a lane must not take the
	// last session a command could have (sshd's MaxSessions): a resume
	// check would have nothing to run in.
	// The exec helper already holds the session its commands run in.
	for len(ls) > 1 && s.caps(ctx).hasher.needsSession() {
		if _, err := s.execOutputTries(lctx, "true", 3*time.Second, 3); !errors.Is(err, errNoSession) {
			break
		}
		ls = s.shedLane()
	}
	return &lanePicker{lanes: ls, dead: make([]atomic.Bool, len(ls))}
}

// pick returns the next live lane (any one if none is).
func (p *lanePicker) pick() *Session {
	n := uint64(len(p.lanes))
	start := p.next.Add(1)
	for j := range n {
		if i := (start + j) % n; !p.dead[i].Load() {
			return p.lanes[i]
		}
	}
	return p.lanes[start%n]
}

// check notes that l's channel is gone if err says so.
func (p *lanePicker) check(l *Session, err error) {
	if err == nil || !errors.Is(err, sftp.ErrSSHFxConnectionLost) {
		return
	}
	for i, x := range p.lanes {
		if x == l {
			p.dead[i].Store(true)
		}
	}
}

// forEach runs fn on every item with n workers, at most BigWorkers of them
// on big items (by size), until ctx ends. fn's calls run concurrently; done
// is called for each item, one at a time, with fn's results.
func forEach[T, R any](ctx context.Context, c *Carrier, n int, items []T, size func(T) int64, fn func(T) (R, error), done func(T, R, error)) {
	var mu sync.Mutex
	work := make(chan T)
	var wg sync.WaitGroup
	big := c.bigSlots()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				release, ok := big.take(ctx, size(it))
				if !ok {
					continue
				}
				res, err := fn(it)
				release()
				mu.Lock()
				done(it, res, err)
				mu.Unlock()
			}
		}()
	}
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		work <- it
	}
	close(work)
	wg.Wait()
}
