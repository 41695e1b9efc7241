package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pkg/sftp"

	"github.com/messor-sync/messor/protocol"
)

// Small files dropped off in batches: on a stock OpenSSH host whose exec
// helper is up, a dropoff of many small files writes each partial with an
// open, its writes, a setstat (its mtime), an fsync@openssh.com and a
// close, with no read back of its own, and proves them in groups, one
// helper command per group (protocol/doc.go, "Delivering small files in
// batches"): sha256sum -c over the group's list of digests and names (one
// process) and a chmod per mode. Where the group does not check out as a
// whole, a second command checks each partial by itself and says which
// matched. Only a partial proven is renamed into place, by its worker, as
// the per-file path does; any other (a mismatch, a reply that cannot be
// read, a helper gone) goes the per-file path from the start: written
// again, fsynced, read back. While one group's command runs, the workers
// write the next group's partials over the lanes.
//
// The partials' data is synced by the lanes' own fsyncs, not by one sync
// -f (syncfs) per group in the helper: measured on loopback and at 10 ms
// RTT (1,500 files of 4 KiB, five paired rounds), syncfs was no faster
// (medians 2.33 s against 2.11 s, 3.42 s against 3.06 s): the lanes'
// fsyncs run concurrently and are joined in journal commits, while the
// group's syncfs held up its verdict.

const (
	dropBatchMaxBytes = 16 << 20 // bytes hashed per command; files and names as batchMaxFiles, batchMaxNames
	// dropBatchWorkers is how many files a batched dropoff keeps in
	// flight at least: a worker waits for its group's command, and the
	// next group is written meanwhile.
	dropBatchWorkers = 1024
)

// dropBatcher runs a dropoff's group commands, one at a time, in the
// session's exec helper. Its methods are safe for concurrent use.
type dropBatcher struct {
	s        *Session
	e        atomic.Pointer[execHasher] // once the probe found a helper
	noHelper atomic.Bool                // the probe found none
	noCheck  atomic.Bool                // the whole-group check fails here

	mu      sync.Mutex
	pending []*dropItem
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// dropItem is one partial waiting for its group's verdict.
type dropItem struct {
	partial  string      // relative to the login directory
	want     string      // its SHA-256, hex
	perm     fs.FileMode // the mode it is given once it matches
	size     int64
	verified bool // its digest matched, its mode set; before ready is closed
	ready    chan struct{}
}

// startDropBatches returns a batcher for a dropoff of n files to s, an
// OpenSSH host, where n is at least batchMin; nil otherwise. Whether the
// host's exec helper is up is known only once its probe answers (the
// shell's start, overlapped with the first writes): until then the
// partials written wait in their group; without a helper each goes the
// per-file path, and so does every later file (usable).
func (c *Carrier) startDropBatches(ctx context.Context, s *Session, n int) *dropBatcher {
	if n < batchMin || s.agent || !s.rwHandles || !s.noReplace || !s.hasFsync {
		return nil
	}
	b := &dropBatcher{s: s, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop(ctx)
	return b
}

// usable reports whether a file is worth writing for a batch: false once
// the host is known to have no exec helper (or it died).
func (b *dropBatcher) usable() bool {
	if b == nil || b.noHelper.Load() {
		return false
	}
	if e := b.e.Load(); e != nil && e.helper.gone() != nil {
		return false
	}
	return true
}

// helper waits (at most batchCapsWait) for the session's probe and
// returns its exec hasher with a live helper; nil where there is none.
func (b *dropBatcher) helper(ctx context.Context) *execHasher {
	if e := b.e.Load(); e != nil || b.noHelper.Load() {
		return e
	}
	e := b.s.liveExecHasher(ctx)
	if e == nil {
		b.noHelper.Store(true)
		return nil
	}
	b.e.Store(e)
	return e
}

// close ends the batcher once no worker waits on it.
func (b *dropBatcher) close() {
	if b == nil {
		return
	}
	close(b.stop)
	<-b.done
}

// prove queues it for the next group and waits for its verdict; on ctx's
// end it returns with it unverified.
func (b *dropBatcher) prove(ctx context.Context, it *dropItem) {
	it.ready = make(chan struct{})
	b.mu.Lock()
	b.pending = append(b.pending, it)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	select {
	case <-it.ready:
	case <-ctx.Done():
	}
}

func (b *dropBatcher) loop(ctx context.Context) {
	defer close(b.done)
	for {
		select {
		case <-b.kick:
		case <-b.stop:
			return
		}
		for {
			g := b.take()
			if len(g) == 0 {
				break
			}
			b.run(ctx, g)
			for _, it := range g {
				close(it.ready)
			}
		}
	}
}

// take removes the next group from what is pending.
func (b *dropBatcher) take() []*dropItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	var bytes, names int64
	n := 0
	for n < len(b.pending) && n < batchMaxFiles {
		it := b.pending[n]
		if n > 0 && (bytes+it.size > dropBatchMaxBytes || names+int64(len(it.partial)) > batchMaxNames) {
			break
		}
		bytes += it.size
		names += int64(len(it.partial)) + 8
		n++
	}
	g := b.pending[:n:n]
	b.pending = b.pending[n:]
	return g
}

// run proves the group g and notes each verdict in its item: first with
// one check of the whole group (dropBatchCheck); where that fails (a
// mismatch, no sha256sum -c), with a check of each partial by itself
// (dropBatchEach), which says which. A command that fails or answers what
// cannot be read leaves every item unproven.
func (b *dropBatcher) run(ctx context.Context, g []*dropItem) {
	e := b.helper(ctx)
	if e == nil {
		return
	}
	var bytes int64
	for _, it := range g {
		bytes += it.size
	}
	verdicts, err := b.check(ctx, e, g, bytes)
	b.s.log.Debug("batch verify", "files", len(g), "bytes", bytes, "proven", strings.Count(string(verdicts), "y"), "err", err)
	if err != nil {
		return
	}
	for i, it := range g {
		it.verified = verdicts[i] == 'y'
	}
}

// check runs the group's commands: the whole group at once while that has
// not failed on this host for want of sha256sum -c, then each by itself.
func (b *dropBatcher) check(ctx context.Context, e *execHasher, g []*dropItem, bytes int64) ([]byte, error) {
	if !b.noCheck.Load() {
		out, err := e.helper.run(ctx, dropBatchCheck(e.dir, g), hashTime(bytes))
		if err != nil {
			return nil, err
		}
		switch line := execLines(out, 1)[0]; line {
		case "ok":
			return []byte(strings.Repeat("y", len(g))), nil
		case "n":
		default:
			return nil, fmt.Errorf("%w: %q", errDropBatchReply, line)
		}
	}
	out, err := e.helper.run(ctx, dropBatchEach(e.tool, e.dir, g), hashTime(bytes))
	if err != nil {
		return nil, err
	}
	verdicts, err := parseDropBatch(out, len(g))
	if err == nil && !strings.Contains(string(verdicts), "n") {
		// Every partial matched by itself: the whole-group check cannot
		// work here (no sha256sum -c); each is checked by itself from now.
		b.noCheck.Store(true)
	}
	return verdicts, err
}

// dropBatchCheck is the POSIX shell command proving all the partials of g
// (under dir, the login directory) at once: sha256sum -c over a list of
// "<digest>  <absolute path>" lines (one process for the group), then, if
// it says OK for every one, a chmod per mode. It answers "ok", else "n". A
// name holding a newline or a backslash (which sha256sum -c reads escaped)
// is never in a group.
func dropBatchCheck(dir string, g []*dropItem) string {
	var b strings.Builder
	b.WriteString(`if n=$(printf '%s\n'`)
	byMode := map[fs.FileMode][]string{}
	var modes []fs.FileMode
	for _, it := range g {
		f := path.Join(dir, it.partial)
		b.WriteString(" " + protocol.ShellQuote(it.want+"  "+f))
		m := writingPerm(it.perm)
		if byMode[m] == nil {
			modes = append(modes, m)
		}
		byMode[m] = append(byMode[m], protocol.ShellQuote(f))
	}
	// One line per partial, "<name>: OK" where it matched: a line
	// sha256sum -c could not parse is passed over with no line and, in
	// GNU's, no failing status.
	fmt.Fprintf(&b, " | sha256sum -c 2>/dev/null | grep -c ': OK$') && [ \"$n\" -eq %d ]", len(g))
	for _, m := range modes {
		fmt.Fprintf(&b, " && chmod %04o -- %s 2>/dev/null", m, strings.Join(byMode[m], " "))
	}
	b.WriteString("; then echo ok; else echo n; fi")
	return b.String()
}

// dropBatchEach is the POSIX shell command proving the partials of g
// (under dir) one by one with tool (one of protocol.HashTools): one line
// per partial, in g's order, "y" (its digest matched, its mode set) or
// "n", then "end". Names travel quoted (protocol.ShellQuote) and come back
// only as positions, so no name can be taken for another or for a reply.
func dropBatchEach(tool, dir string, g []*dropItem) string {
	var b strings.Builder
	for _, it := range g {
		f := protocol.ShellQuote(path.Join(dir, it.partial))
		fmt.Fprintf(&b, "if h=$(%s < %s 2>/dev/null) && case $h in %s*) true;; *) false;; esac && chmod %04o %s 2>/dev/null; then echo y; else echo n; fi; ",
			tool, f, it.want, writingPerm(it.perm), f)
	}
	b.WriteString("echo end")
	return b.String()
}

// errDropBatchReply: a group command's reply is not one verdict per
// partial followed by "end" (or not "ok" or "n").
var errDropBatchReply = errors.New("batch verify: reply not as asked")

// parseDropBatch reads dropBatchEach's reply for n partials: the
// verdicts, in order. Anything else in the last n+1 lines is an error
// (what a login shell printed before them is passed over, as execLines
// does).
func parseDropBatch(out []byte, n int) ([]byte, error) {
	lines := execLines(out, n+1)
	var verdicts []byte
	for _, l := range lines[:n] {
		if l != "y" && l != "n" {
			return nil, fmt.Errorf("%w: verdict %q", errDropBatchReply, l)
		}
		verdicts = append(verdicts, l[0])
	}
	if lines[n] != "end" {
		return nil, fmt.Errorf("%w: %q, not end", errDropBatchReply, lines[n])
	}
	return verdicts, nil
}

// uploadBatched writes the object for e into partial, sets its mtime,
// syncs it, and proves it in b's next group; where that does not prove it,
// the per-file path (upload) writes it again and proves it by itself.
func (c *Carrier) uploadBatched(ctx context.Context, s *Session, b *dropBatcher, e Entry, partial string, want []byte, tr Tracker) error {
	if strings.ContainsAny(partial, "\n\\") {
		return c.upload(ctx, s, e, partial, want, tr) // sha256sum -c reads these escaped
	}
	if err := c.writeSmall(s, e, partial, tr); err != nil {
		var lerr *localWriteError
		if ctx.Err() != nil || errors.As(err, &lerr) {
			return err
		}
		c.log.Debug("batched write failed; writing it by itself", "host", s.Host.Name, "path", partial, "err", err)
		return c.upload(ctx, s, e, partial, want, tr)
	}
	if c.sliceWritten != nil {
		c.sliceWritten(partial, 0, e.Size)
	}
	it := &dropItem{partial: partial, want: e.Hash, perm: e.DeliverPerm(), size: e.Size}
	b.prove(ctx, it)
	if err := ctx.Err(); err != nil {
		return err
	}
	if !it.verified {
		c.log.Debug("not proven in its batch; delivering it by itself", "host", s.Host.Name, "path", partial)
		return c.upload(ctx, s, e, partial, want, tr)
	}
	return nil
}

// writeSmall writes the object for e into partial (created or truncated,
// 0600 as privateCreates asks) with an open and its writes (writeWhole),
// sets its mtime (after the last write, before the sync that makes it
// last, as upload), syncs it (fsync@openssh.com) and closes it. A failure
// to read the carrier's own copy is a *localWriteError.
func (c *Carrier) writeSmall(s *Session, e Entry, partial string, tr Tracker) error {
	obj, err := os.Open(c.buf.ObjectPath(e.Hash))
	if err != nil {
		return &localWriteError{fmt.Errorf("buffer %s: %s: %w", c.buf.Dir(), e.Path, err)}
	}
	defer obj.Close()
	f, err := s.createPartial(partial, os.O_WRONLY)
	if err != nil {
		return fmt.Errorf("host %s: create %s: %w", s.Host.Name, partial, err)
	}
	defer f.Close()
	if err := writeWhole(f, obj, e.Size, tr); err != nil {
		var lerr *localWriteError
		if errors.As(err, &lerr) {
			return &localWriteError{fmt.Errorf("buffer %s: %s: %w", c.buf.Dir(), e.Path, lerr.err)}
		}
		return fmt.Errorf("host %s: write %s: %w%s", s.Host.Name, partial, err, s.diskFullHint(path.Dir(partial), e.Size))
	}
	c.setMTime(s, partial, e)
	if err := f.Sync(); err != nil {
		return fmt.Errorf("host %s: fsync %s: %w", s.Host.Name, partial, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("host %s: close %s: %w", s.Host.Name, partial, err)
	}
	return nil
}

// createPartial opens partial (flags: os.O_WRONLY or os.O_RDWR) as a new
// file, for a small file or a big one not resumed, a receipt or the clock
// probe beside them, never one a visit left: that one may be a hard link
// to the file delivered under its final name (a carrier killed between
// the link that placed it and the partial's removal, a host that crashed
// inside its own rename), and
// writing through it would rewrite that file in place
// (TestPartialLinkedToDelivered); or a symbolic link put there, pointing
// out of the inbox (TestPartialSymlinkNotFollowed). A partial there is
// removed (its name only) and the file made again, exclusively.
func (s *Session) createPartial(partial string, flags int) (*sftp.File, error) {
	flags |= os.O_CREATE | os.O_EXCL
	f, err := s.sftp.OpenFile(partial, flags)
	if err == nil {
		return f, nil
	}
	if rerr := s.sftp.Remove(partial); rerr != nil {
		return nil, err
	}
	return s.sftp.OpenFile(partial, flags)
}

// smallBuffers bounds the small files' buffers held in memory at once, in
// the process: one written whole (writeWhole) or read back (upload), at
// most 64 * smallFile (16 MiB) however many workers a dropoff runs
// (dropBatchWorkers; a host without an exec helper has each of them
// deliver file by file); 64 in flight is 6,400 files a second at 10 ms a
// round trip.
var smallBuffers = make(chan struct{}, 64)

// smallHeld counts the small files' buffers held, and the most held at
// once (TestSmallBuffersBounded).
var smallHeld struct{ n, peak atomic.Int64 }

// holdSmall waits for one of smallBuffers; the function it returns gives
// it back.
func holdSmall() (release func()) {
	smallBuffers <- struct{}{}
	n := smallHeld.n.Add(1)
	for p := smallHeld.peak.Load(); n > p && !smallHeld.peak.CompareAndSwap(p, n); p = smallHeld.peak.Load() {
	}
	return func() {
		smallHeld.n.Add(-1)
		<-smallBuffers
	}
}

// writeWhole sends the size bytes of obj, a small file (at most
// smallFile), to f from its start, outside the session's write window
// (writeWindowed): that bounds what a cut link loses of a partial to be
// resumed, and a small file is never resumed but sent again. With the
// window's four writes in flight for the whole session, 10 ms a round trip
// capped a dropoff of many small files near 400 files a second. A failure
// to read obj is a *localWriteError.
func writeWhole(f *sftp.File, obj io.ReaderAt, size int64, tr Tracker) error {
	if size == 0 {
		return nil
	}
	defer holdSmall()()
	buf := make([]byte, size)
	if _, err := obj.ReadAt(buf, 0); err != nil {
		return &localWriteError{err}
	}
	if _, err := f.Write(buf); err != nil {
		return err
	}
	tr.Add(size)
	return nil
}
