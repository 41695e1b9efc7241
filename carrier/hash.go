package carrier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

// hasher is how a session verifies host files: the SHA-256 of the first n
// bytes of a file (hash), or of n bytes at off (slice, where canSlice says
// so). l is the lane asking: reading back uses its own SFTP channel.
type hasher interface {
	kind() HashKind
	// onHost: the host computes the digest, so checking a prefix of a
	// file costs no transfer of it.
	onHost() bool
	// batches: many small files' digests go in one request, so hashing
	// every file costs no process started on the host.
	batches() bool
	// needsSession: each hash takes an SSH session of its own (a
	// command with no live exec helper), one a lane must leave free.
	needsSession() bool
	hash(ctx context.Context, l *Session, p string, n int64) ([]byte, error)
	canSlice(ctx context.Context, l *Session) bool
	// sliceProbed: canSlice answers without waiting for a probe.
	sliceProbed() bool
	// links is how many names the host says the file p has, 0 where it
	// cannot tell.
	links(ctx context.Context, l *Session, p string) int
	slice(ctx context.Context, l *Session, p string, off, n int64) ([]byte, error)
}

// hostCaps is what a host offers the carrier, probed once per session
// (caps): the hasher, and on a stock host the measured cost of one command
// (a shell start, profile and all).
type hostCaps struct {
	hasher   hasher
	execCost time.Duration // the probe's wall time; 0 where nothing was run
}

// caps returns the host's capabilities, probing them on first use.
func (s *Session) caps(ctx context.Context) *hostCaps {
	s.capsOnce.Do(func() {
		s.hostCaps = s.probeCaps(ctx)
		s.capsKnown.Store(true)
	})
	return s.hostCaps
}

// HashKind is how a session verifies host files. No user sees it; the
// conformance and fault suites assert which one a host gets.
type HashKind uint8

const (
	HashByReadback HashKind = iota // reading the file back over SFTP
	HashByCommand                  // a hash tool run on a stock host
	HashByAgent                    // messor agent's requests
)

func (k HashKind) String() string {
	switch k {
	case HashByCommand:
		return "exec"
	case HashByAgent:
		return "agent"
	}
	return "readback"
}

// HashKind says how this session verifies host files.
func (s *Session) HashKind(ctx context.Context) HashKind {
	return s.caps(ctx).hasher.kind()
}

// hashRange returns the SHA-256 of the first n bytes of the file at p
// (relative to the login directory), computed on the host where it can be
// (agent request, or a hash tool over exec), else by reading it back.
func (s *Session) hashRange(ctx context.Context, p string, n int64) ([]byte, error) {
	h := s.caps(ctx).hasher
	if _, ok := h.(*execHasher); ok && n < execHashMin {
		// Starting a process on the host (a login shell, profile and
		// all) costs more than reading a small file back.
		return s.readbackHash(ctx, p, n)
	}
	sum, err := h.hash(ctx, s, p, n)
	if errors.Is(err, errNoSession) {
		// No session free for a command (a host allowing fewer than
		// sshd's default 10): read it back instead.
		return s.readbackHash(ctx, p, n)
	}
	return sum, err
}

// hashPrefix is hashRange for checking a partial before resuming it: it
// uses the host's own hashing whatever the size, because reading a prefix
// back costs as many bytes as sending it again (and over a link that drops
// every few MiB, reading back a partial of that size never finishes, so the
// upload never grows). Where the host hashes for us it never falls back to
// reading back.
func (s *Session) hashPrefix(ctx context.Context, p string, n int64) ([]byte, error) {
	return s.caps(ctx).hasher.hash(ctx, s, p, n)
}

// execHashMin is the smallest range hashed by exec on a stock host; smaller
// ones are read back, which is cheaper than starting a shell there.
const execHashMin = 1 << 20

// probeCaps finds how s can verify host files: the agent's requests, a
// hash tool run by command (probed, and timed), or reading back.
func (s *Session) probeCaps(ctx context.Context) *hostCaps {
	defer s.helperOpened()
	if s.probeGate != nil {
		s.probeGate()
	}
	if s.agent {
		return &hostCaps{hasher: agentHasher{}}
	}
	caps := &hostCaps{hasher: readbackHasher{}}
	wd, err := s.sftp.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") {
		return caps
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	e := &execHasher{dir: wd}
	probe := hashProbe()
	t0 := time.Now()
	out, err := s.probeHelper(pctx, e, probe)
	caps.execCost = time.Since(t0)
	if err != nil {
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		out, err = s.execOutput(fctx, probe, 0)
	}
	if tool := probedTool(out); tool != "" {
		e.tool = tool
		caps.hasher = e
		s.log.Debug("the host hashes by command", "tool", tool, "helper", e.helper != nil, "exec_cost", caps.execCost.Round(time.Millisecond))
		return caps
	}
	if e.helper != nil {
		e.helper.close(errHelperDead)
	}
	s.log.Debug("no server-side hashing; verifying by reading back", "err", err)
	return caps
}

// hashProbe is the command asking, in one exec, which of the hash tools
// work here behind head (which every hash command but the slice's cuts its
// input with): exactly one line per tool, the best first, whether the tool
// is there or not, so the last lines of the output (see execLines) are the
// tools' answers in order.
func hashProbe() string {
	var probe []string
	for _, tool := range protocol.HashTools {
		probe = append(probe, `echo "$( { printf messorX | head -c 6 | `+tool+`; } 2>/dev/null )"`)
	}
	return strings.Join(probe, "; ")
}

// probedTool is the best of protocol.HashTools whose line of the output of
// hashProbe is the right digest; "" when none is.
func probedTool(out []byte) string {
	sum := sha256.Sum256([]byte("messor"))
	want := hex.EncodeToString(sum[:])
	lines := execLines(out, len(protocol.HashTools))
	for i, tool := range protocol.HashTools {
		if strings.HasPrefix(lines[i], want) {
			return tool
		}
	}
	return ""
}

// probeHelper starts e's exec helper on s and runs the probe cmd in it; an
// error where the helper did not start or answer (no exec, a restricted
// key's SFTP server, a shell without sh -s), and then e has no helper.
func (s *Session) probeHelper(ctx context.Context, e *execHasher, cmd string) ([]byte, error) {
	h, err := s.startHelper(ctx)
	s.helperOpened()
	if err != nil {
		s.log.Debug("no exec helper; one session per command", "err", err)
		return nil, err
	}
	out, err := h.run(ctx, cmd, 0)
	if err != nil {
		h.close(fmt.Errorf("%w: %w", errHelperDead, err))
		s.log.Debug("the exec helper did not answer; one session per command", "err", err)
		return nil, err
	}
	e.helper = h
	return out, nil
}

// run runs cmd on the host as execOutput does: in the helper while it
// lives; in a session of its own where there is none, or when it dies with
// cmd in flight.
func (e *execHasher) run(ctx context.Context, s *Session, cmd string, timeout time.Duration) ([]byte, error) {
	if e.helperLive() {
		out, err := e.helper.run(ctx, cmd, timeout)
		if !errors.Is(err, errHelperDead) || ctx.Err() != nil {
			return out, err
		}
		s.log.Debug("the exec helper is gone; one session per command", "err", err)
	}
	return s.execOutput(ctx, cmd, timeout)
}

func (s *Session) helperOpened() { s.helperOpenOnce.Do(func() { close(s.helperOpen) }) }

// awaitHelperOpen starts the probe if it is not running and waits until
// the exec helper holds its session (or none will be opened): lanes opened
// after it leave that session to the helper, and open while its shell
// starts.
func (s *Session) awaitHelperOpen(ctx context.Context) {
	go s.caps(ctx)
	select {
	case <-s.helperOpen:
	case <-ctx.Done():
	}
}

// helperUp reports whether commands run in the session's exec helper.
func (s *Session) helperUp(ctx context.Context) bool {
	e, ok := s.caps(ctx).hasher.(*execHasher)
	return ok && e.helperLive()
}

// canHashSlices reports whether hashSlice works on s: on an agent that has
// not refused it, or on a stock host where a probe (once per session) shows
// that dd and head -c work together with the hash tool.
func (s *Session) canHashSlices(ctx context.Context) bool {
	return s.caps(ctx).hasher.canSlice(ctx, s)
}

// errSliceRefused: the agent refused a hash-slice request.
var errSliceRefused = errors.New("hash-slice refused by the agent")

// hashSlice returns the SHA-256 of the n bytes at off in the host file p
// (relative to the login directory), computed on the host: by the agent
// (protocol.HashSliceRequest), or on a stock host by a command running
// protocol.HashRangeCommand, which reads whole blocks of
// protocol.HashBlock bytes when off is a multiple of it. It needs a session
// whose hasher hashes on the host (onHost). An agent's refusal is an error
// wrapping errSliceRefused, and marks the session (sliceRefused): an older
// agent, or a file that is not as long as it should be; either way the
// caller verifies the whole file instead. On a stock host a file that ends
// before off+n yields the digest of fewer bytes, which the caller's
// comparison rejects.
func (s *Session) hashSlice(ctx context.Context, p string, off, n int64) ([]byte, error) {
	return s.caps(ctx).hasher.slice(ctx, s, p, off, n)
}

// agentHasher asks messor agent (protocol.HashRangeRequest,
// protocol.HashSliceRequest).
type agentHasher struct{}

func (agentHasher) kind() HashKind     { return HashByAgent }
func (agentHasher) onHost() bool       { return true }
func (agentHasher) batches() bool      { return true }
func (agentHasher) needsSession() bool { return false }

func (agentHasher) hash(ctx context.Context, l *Session, p string, n int64) ([]byte, error) {
	if n <= protocol.MaxHashBatchLength {
		return l.hashBatch.hash(ctx, l, p, n)
	}
	return l.agentHash(ctx, p, n)
}

func (agentHasher) canSlice(_ context.Context, l *Session) bool { return !l.sliceRefused.Load() }
func (agentHasher) sliceProbed() bool                           { return true }

// links: the agent has no request telling them (0). On Linux it places by
// renameat2(RENAME_NOREPLACE), which leaves no second name; elsewhere, or
// on a file system without it, by a link then an unlink, which a crash
// between the two can leave as two names (agent/fs.go).
func (agentHasher) links(context.Context, *Session, string) int { return 0 }

func (agentHasher) slice(_ context.Context, s *Session, p string, off, n int64) ([]byte, error) {
	ok, reply, err := s.askHash(s.sliceRequest, ssh.Marshal(protocol.HashSliceMsg{Path: p, Offset: uint64(off), Length: uint64(n)}), n)
	if err != nil {
		return nil, fmt.Errorf("host %s: hash %s (bytes %d to %d): %w", s.Host.Name, p, off, off+n, err)
	}
	if !ok || len(reply) != sha256.Size {
		s.sliceRefused.Store(true)
		return nil, fmt.Errorf("host %s: hash %s (bytes %d to %d): %w", s.Host.Name, p, off, off+n, errSliceRefused)
	}
	return reply, nil
}

// readbackHasher reads the file back over the lane's SFTP channel; it
// cannot hash slices.
type readbackHasher struct{}

func (readbackHasher) kind() HashKind     { return HashByReadback }
func (readbackHasher) onHost() bool       { return false }
func (readbackHasher) batches() bool      { return false }
func (readbackHasher) needsSession() bool { return false }

func (readbackHasher) hash(ctx context.Context, l *Session, p string, n int64) ([]byte, error) {
	return l.readbackHash(ctx, p, n)
}

func (readbackHasher) canSlice(context.Context, *Session) bool     { return false }
func (readbackHasher) sliceProbed() bool                           { return true }
func (readbackHasher) links(context.Context, *Session, string) int { return 0 }

func (readbackHasher) slice(_ context.Context, s *Session, p string, _, _ int64) ([]byte, error) {
	return nil, fmt.Errorf("host %s: hash %s: the host cannot hash for us", s.Host.Name, p)
}

// execHasher runs a hash tool on a stock host (protocol.HashCommand,
// protocol.HashRangeCommand) on files under dir, the login directory.
type execHasher struct {
	tool, dir string
	// helper runs the commands in one shell per connection; nil, or
	// gone, where it could not start or died: then one session each.
	helper     *execHelper
	sliceOnce  sync.Once
	execSlices bool        // the host runs protocol.HashRangeCommand
	sliceKnown atomic.Bool // execSlices is set: the probe has answered
}

func (*execHasher) kind() HashKind       { return HashByCommand }
func (*execHasher) onHost() bool         { return true }
func (*execHasher) batches() bool        { return false }
func (e *execHasher) needsSession() bool { return !e.helperLive() }

// helperLive reports whether e's commands run in its exec helper.
func (e *execHasher) helperLive() bool { return e.helper != nil && e.helper.gone() == nil }

func (e *execHasher) hash(ctx context.Context, s *Session, p string, n int64) ([]byte, error) {
	abs := path.Join(e.dir, p)
	return e.execHash(ctx, s, abs, protocol.HashCommand(e.tool, abs, n), n)
}

func (e *execHasher) sliceProbed() bool { return e.sliceKnown.Load() }

// links asks a stock host how many names the file p has (`stat -c %h`,
// GNU and busybox); 0 where it cannot tell.
func (e *execHasher) links(ctx context.Context, s *Session, p string) int {
	out, err := e.run(ctx, s, "stat -c %h -- "+protocol.ShellQuote(path.Join(e.dir, p)), 15*time.Second)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(execLines(out, 1)[0]))
	if err != nil {
		return 0
	}
	return n
}

// canSlice probes, once: "messor" in blocks of 2 bytes, skip one, take
// one: "ss", through head -c 3. dd's count must end the range, as it alone
// does in protocol.HashRangeCommand where the range is whole blocks (a dd
// reading on past it gives "sso": TestSliceHostDDIgnoringCount); that
// head -c cuts is known from the hash probe (hashProbe). One pipeline, as
// the old probe was, for any login shell running it.
func (e *execHasher) canSlice(ctx context.Context, s *Session) bool {
	e.sliceOnce.Do(func() {
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		out, err := e.run(pctx, s, "printf messor | dd bs=2 skip=1 count=1 2>/dev/null | head -c 3 | "+e.tool, 0)
		sum := sha256.Sum256([]byte("ss"))
		e.execSlices = err == nil && strings.HasPrefix(execLines(out, 1)[0], hex.EncodeToString(sum[:]))
		if !e.execSlices {
			s.log.Debug("the host cannot hash a slice of a file (dd, head -c); verifying whole files", "err", err, "output", string(out))
		}
		e.sliceKnown.Store(true)
	})
	return e.execSlices
}

func (e *execHasher) slice(ctx context.Context, s *Session, p string, off, n int64) ([]byte, error) {
	abs := path.Join(e.dir, p)
	sum, err := e.execHash(ctx, s, abs, protocol.HashRangeCommand(e.tool, abs, off, n), n)
	if errors.Is(err, errNoSession) {
		// No session free for a command (sshd's MaxSessions): the
		// whole file is verified at the end instead.
		return nil, fmt.Errorf("host %s: hash %s (bytes %d to %d): %w: %w", s.Host.Name, p, off, off+n, errSliceRefused, err)
	}
	return sum, err
}

// execHash runs cmd, which hashes n bytes of the file at abs on the host,
// and returns the digest it prints.
func (e *execHasher) execHash(ctx context.Context, s *Session, abs, cmd string, n int64) ([]byte, error) {
	out, err := e.run(ctx, s, cmd, hashTime(n))
	if err != nil {
		return nil, fmt.Errorf("host %s: hash %s: %w", s.Host.Name, abs, err)
	}
	line := execLines(out, 1)[0]
	if len(line) < 64 {
		return nil, fmt.Errorf("host %s: hash %s: short output %q", s.Host.Name, abs, line)
	}
	sum, err := hex.DecodeString(line[:64])
	if err != nil {
		return nil, fmt.Errorf("host %s: hash %s: output %q: %w", s.Host.Name, abs, line, err)
	}
	return sum, nil
}

// hashTime is how long a host may take to hash n bytes: generous (a slow SD
// card, other workers hashing too), and bounded.
func hashTime(n int64) time.Duration {
	return hashSlack + time.Duration(n/(5<<20))*time.Second
}

// hashSlack is what hashTime allows besides the bytes' time (tests set
// less).
var hashSlack = 30 * time.Second

// askHash sends the agent a hash request (global request name with
// payload) for n bytes, one at a time: global requests are answered in
// order, so while the agent hashes our keepalives wait behind it, and the
// idle watch is given that request's bound (expectBusy) from when it goes
// out, not from when it was queued behind another hash
// (TestHashBusyFromItsSending).
func (s *Session) askHash(name string, payload []byte, n int64) (bool, []byte, error) {
	s.hashMu.Lock()
	defer s.hashMu.Unlock()
	defer s.expectBusy(hashTime(n))()
	return s.ssh.SendRequest(name, true, payload)
}

func (s *Session) agentHash(ctx context.Context, p string, n int64) ([]byte, error) {
	ok, reply, err := s.askHash(protocol.HashRangeRequest, ssh.Marshal(protocol.HashRangeMsg{Path: p, Length: uint64(n)}), n)
	if err != nil {
		return nil, fmt.Errorf("host %s: hash %s: %w", s.Host.Name, p, err)
	}
	if !ok || len(reply) != sha256.Size {
		return nil, fmt.Errorf("host %s: hash %s: refused by agent", s.Host.Name, p)
	}
	return reply, nil
}

func (s *Session) readbackHash(ctx context.Context, p string, n int64) ([]byte, error) {
	f, err := s.sftp.Open(p)
	if err != nil {
		return nil, fmt.Errorf("host %s: read back %s: %w", s.Host.Name, p, err)
	}
	defer f.Close()
	h := sha256.New()
	m, err := io.Copy(h, io.LimitReader(f, n))
	if err != nil {
		return nil, fmt.Errorf("host %s: read back %s: %w", s.Host.Name, p, err)
	}
	if m != n {
		return nil, fmt.Errorf("host %s: read back %s: %d bytes, want %d", s.Host.Name, p, m, n)
	}
	return h.Sum(nil), nil
}

// hashBatcher joins the agent hashes of small files asked for by a
// session's workers at once into protocol.HashBatchRequest: global requests
// are answered one at a time, a round trip each, so one per file would cap
// a pickup verified at the source (VerifySource) near one file a round
// trip. While one batch is on the way, the hashes asked for meanwhile wait
// and go in the next. The zero value is ready.
type hashBatcher struct {
	request string      // protocol.HashBatchRequest where empty (tests name another)
	refused atomic.Bool // the agent refused a batch: one request a file
	mu      sync.Mutex
	queue   []*batchedHash
	sending bool
}

// batchedHash is one file's hash waiting in a batch.
type batchedHash struct {
	item protocol.HashBatchItem
	sum  []byte
	err  error
	done chan struct{}
}

// errBatchRefused: the agent refused a HashBatchRequest (an older agent).
var errBatchRefused = errors.New("hash batch refused by the agent")

// hash returns the SHA-256 of the first n bytes of p, asked in a batch
// where the agent takes batches, else alone.
func (b *hashBatcher) hash(ctx context.Context, s *Session, p string, n int64) ([]byte, error) {
	if b.refused.Load() {
		return s.agentHash(ctx, p, n)
	}
	w := &batchedHash{item: protocol.HashBatchItem{Path: p, Length: uint64(n)}, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, w)
	if !b.sending {
		b.sending = true
		go b.send(s)
	}
	b.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if errors.Is(w.err, errBatchRefused) {
		return s.agentHash(ctx, p, n)
	}
	return w.sum, w.err
}

// send sends the queued hashes in batches until none wait.
func (b *hashBatcher) send(s *Session) {
	for {
		b.mu.Lock()
		batch := nextBatch(b.queue)
		b.queue = b.queue[len(batch):]
		if len(batch) == 0 {
			b.queue = nil
			b.sending = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.answer(s, batch)
	}
}

// nextBatch is the head of queue that goes in one request: at most
// protocol.MaxHashBatch items and protocol.MaxHashBatchSize bytes of
// payload (TestHashBatchFitsAPacket), and at least one item.
func nextBatch(queue []*batchedHash) []*batchedHash {
	size := 4
	for i, w := range queue {
		size += w.item.HashBatchSize()
		if i == protocol.MaxHashBatch || i > 0 && size > protocol.MaxHashBatchSize {
			return queue[:i]
		}
	}
	return queue
}

// answer asks the agent for batch's hashes and hands each its answer.
func (b *hashBatcher) answer(s *Session, batch []*batchedHash) {
	defer func() {
		for _, w := range batch {
			close(w.done)
		}
	}()
	items := make([]protocol.HashBatchItem, len(batch))
	var total int64
	for i, w := range batch {
		items[i] = w.item
		total += int64(w.item.Length)
	}
	name := b.request
	if name == "" {
		name = protocol.HashBatchRequest
	}
	ok, reply, err := s.askHash(name, protocol.MarshalHashBatch(items), total)
	var sums [][]byte
	switch {
	case err != nil:
		err = fmt.Errorf("host %s: hash %d files: %w", s.Host.Name, len(batch), err)
	case !ok:
		b.refused.Store(true)
		err = errBatchRefused
	default:
		if sums, err = protocol.UnmarshalHashBatchReply(reply, len(batch)); err != nil {
			err = fmt.Errorf("host %s: hash %d files: %w", s.Host.Name, len(batch), err)
		}
	}
	for i, w := range batch {
		switch {
		case err != nil:
			w.err = err
		case sums[i] == nil:
			w.err = fmt.Errorf("host %s: hash %s: refused by agent", s.Host.Name, w.item.Path)
		default:
			w.sum = sums[i]
		}
	}
}
