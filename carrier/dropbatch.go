package carrier

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/messor-sync/messor/protocol"
)

// Small files dropped off in batches: on a stock OpenSSH host whose exec
// helper is up, a dropoff of many small files writes each partial with an
// open, its writes, a close and a setstat (its mtime) only, and proves them
// in groups, one helper command per group (protocol/doc.go, "Delivering
// small files in batches"): sha256sum -c over the group's list of digests
// and names (one process), a chmod per mode, and one sync -- FILES making
// their data durable. Where the group does not check out as a whole, a
// second command checks each partial by itself and says which matched.
// Only a partial proven (and synced) is renamed into place, by its worker,
// as the per-file path does; any other (a mismatch, a reply that cannot be
// read, a helper gone) goes the per-file path from the start: written
// again, fsynced, read back. While one group's command runs, the workers
// write the next group's partials over the lanes.

const (
	dropBatchMaxFiles = 512       // partials per command (two bytes of reply each)
	dropBatchMaxBytes = 16 << 20  // bytes hashed per command
	dropBatchMaxNames = 128 << 10 // bytes of names on sync's command line
	// dropBatchWorkers is how many files a batched dropoff keeps in
	// flight at least: a worker waits for its group's command, and the
	// next group is written meanwhile.
	dropBatchWorkers = 1024
)

// dropBatchSync makes the helper's command sync the verified partials
// (sync -- FILES); false leaves each to an fsync@openssh.com of its own
// before its handle is closed.
var dropBatchSync = true

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
	partial string      // relative to the login directory
	want    string      // its SHA-256, hex
	perm    fs.FileMode // the mode it is given once it matches
	size    int64
	// Set before ready is closed: verified (its digest matched, its mode
	// set), synced (its data durable).
	verified, synced bool
	ready            chan struct{}
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
	caps := make(chan *hostCaps, 1)
	go func() { caps <- b.s.caps(ctx) }()
	var hc *hostCaps
	select {
	case hc = <-caps:
	case <-time.After(batchCapsWait):
	case <-ctx.Done():
	}
	e, ok := (*execHasher)(nil), false
	if hc != nil {
		e, ok = hc.hasher.(*execHasher)
	}
	if !ok || e.helper == nil || e.helper.gone() != nil {
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
	for n < len(b.pending) && n < dropBatchMaxFiles {
		it := b.pending[n]
		if n > 0 && (bytes+it.size > dropBatchMaxBytes || names+int64(len(it.partial)) > dropBatchMaxNames) {
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
// mismatch, no sha256sum), with a check of each partial by itself
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
	verdicts, synced, err := b.check(ctx, e, g, bytes)
	b.s.log.Debug("batch verify", "files", len(g), "bytes", bytes, "proven", strings.Count(string(verdicts), "y"), "synced", synced, "err", err)
	if err != nil {
		return
	}
	for i, it := range g {
		it.verified = verdicts[i] == 'y'
		it.synced = it.verified && synced
	}
}

// check runs the group's commands: the whole group at once while that has
// not failed on this host for want of sha256sum, then each by itself.
func (b *dropBatcher) check(ctx context.Context, e *execHasher, g []*dropItem, bytes int64) (verdicts []byte, synced bool, err error) {
	if !b.noCheck.Load() {
		out, err := e.helper.run(ctx, dropBatchCheck(e.dir, g, dropBatchSync), hashTime(bytes))
		if err != nil {
			return nil, false, err
		}
		line := execLines(out, 1)[0]
		if code, ok := dropBatchStatus(line); ok {
			return []byte(strings.Repeat("y", len(g))), code == 0, nil
		}
		if line != "n" {
			return nil, false, fmt.Errorf("%w: %q", errDropBatchReply, line)
		}
	}
	out, err := e.helper.run(ctx, dropBatchEach(e.tool, e.dir, g, dropBatchSync), hashTime(bytes))
	if err != nil {
		return nil, false, err
	}
	verdicts, synced, err = parseDropBatch(out, len(g))
	if err == nil && !strings.Contains(string(verdicts), "n") {
		// Every partial matched by itself: the whole-group check cannot
		// work here (no sha256sum -c); each is checked by itself from now.
		b.noCheck.Store(true)
	}
	return verdicts, synced, err
}

// dropBatchCheck is the POSIX shell command proving all the partials of g
// (under dir, the login directory) at once: sha256sum -c over a list of
// "<digest>  <absolute path>" lines (one process for the group), then, if
// it says OK for every one, a chmod per mode and one sync -- FILES. It answers
// "s <sync's exit status>" where every partial matched (where sync is
// false: "s 1", nothing synced), else "n". A name holding a newline or a
// backslash (which sha256sum -c reads escaped) is never in a group.
func dropBatchCheck(dir string, g []*dropItem, sync bool) string {
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
	b.WriteString("; then ")
	if sync {
		b.WriteString("st=0; sync -f -- " + strings.Join(dirsOf(dir, g), " ") + ` 2>/dev/null || st=$?; echo "s $st"; `)
	} else {
		b.WriteString(`echo "s 1"; `)
	}
	b.WriteString("else echo n; fi")
	return b.String()
}

// dropBatchEach is the POSIX shell command proving the partials of g
// (under dir) one by one with tool (one of protocol.HashTools): one line
// per partial, in g's order, "y" (its digest matched, its mode set) or
// "n"; then "s <status>", sync's exit status over the matching partials
// (where sync is false: always "s 1", nothing synced). Names travel quoted
// (protocol.ShellQuote) and come back only as positions, so no name can be
// taken for another or for a reply.
func dropBatchEach(tool, dir string, g []*dropItem, sync bool) string {
	var b strings.Builder
	b.WriteString("set --; ")
	for _, it := range g {
		f := protocol.ShellQuote(path.Join(dir, it.partial))
		fmt.Fprintf(&b, "if h=$(%s < %s 2>/dev/null) && case $h in %s*) true;; *) false;; esac && chmod %04o %s 2>/dev/null; then set -- \"$@\" %s; echo y; else echo n; fi; ",
			tool, f, it.want, writingPerm(it.perm), f, f)
	}
	if sync {
		b.WriteString(`st=0; if [ $# -gt 0 ]; then sync -- "$@" 2>/dev/null; st=$?; fi; echo "s $st"`)
	} else {
		b.WriteString(`echo "s 1"`)
	}
	return b.String()
}

// dirsOf is the directories (under dir) holding the partials of g, each
// once, quoted for the shell.
func dirsOf(dir string, g []*dropItem) []string {
	seen := map[string]bool{}
	var out []string
	for _, it := range g {
		d := path.Dir(path.Join(dir, it.partial))
		if !seen[d] {
			seen[d] = true
			out = append(out, protocol.ShellQuote(d))
		}
	}
	return out
}

// dropBatchStatus reads a line "s <status>".
func dropBatchStatus(line string) (int, bool) {
	st, ok := strings.CutPrefix(line, "s ")
	code, err := strconv.Atoi(st)
	return code, ok && err == nil
}

// errDropBatchReply: a group command's reply is not one verdict per
// partial followed by sync's status.
var errDropBatchReply = errors.New("batch verify: reply not as asked")

// parseDropBatch reads a group command's reply for n partials: the
// verdicts, in order, and whether the sync succeeded. Anything else in the
// last n+1 lines is an error (what a login shell printed before them is
// passed over, as execLines does).
func parseDropBatch(out []byte, n int) (verdicts []byte, synced bool, err error) {
	lines := execLines(out, n+1)
	for _, l := range lines[:n] {
		if l != "y" && l != "n" {
			return nil, false, fmt.Errorf("%w: verdict %q", errDropBatchReply, l)
		}
		verdicts = append(verdicts, l[0])
	}
	code, ok := dropBatchStatus(lines[n])
	if !ok {
		return nil, false, fmt.Errorf("%w: status %q", errDropBatchReply, lines[n])
	}
	return verdicts, code == 0, nil
}

// uploadBatched writes the object for e into partial, sets its mtime, and
// proves it in b's next group; where that does not prove it (verified and
// durable), the per-file path (upload) writes it again and proves it by
// itself.
func (c *Carrier) uploadBatched(ctx context.Context, s *Session, b *dropBatcher, e Entry, partial string, want []byte, tr Tracker) error {
	if strings.ContainsAny(partial, "\n\\") {
		return c.upload(ctx, s, e, partial, want, tr) // sha256sum -c reads these escaped
	}
	fsync := !dropBatchSync
	if err := c.writeSmall(s, e, partial, fsync, tr); err != nil {
		if ctx.Err() != nil || errors.Is(err, errLocal) {
			return err
		}
		c.log.Debug("batched write failed; writing it by itself", "host", s.Host.Name, "path", partial, "err", err)
		return c.upload(ctx, s, e, partial, want, tr)
	}
	// After the last write, before the sync that makes it last (as upload).
	if !e.MTime.IsZero() {
		if err := s.sftp.Chtimes(partial, time.Now(), e.MTime); err != nil {
			c.log.Warn("cannot set the mtime; the file arrives with the time of delivery", "host", s.Host.Name, "path", partial, "err", err)
		}
	}
	if c.sliceWritten != nil {
		c.sliceWritten(partial, 0, e.Size)
	}
	it := &dropItem{partial: partial, want: e.Hash, perm: e.deliverPerm(), size: e.Size}
	b.prove(ctx, it)
	if err := ctx.Err(); err != nil {
		return err
	}
	if !it.verified {
		c.log.Debug("not proven in its batch; delivering it by itself", "host", s.Host.Name, "path", partial)
		return c.upload(ctx, s, e, partial, want, tr)
	}
	if !it.synced && !fsync {
		return s.fsyncPath(partial)
	}
	return nil
}

// errLocal marks a failure to read the carrier's own copy.
var errLocal = errors.New("buffer")

// writeSmall writes the object for e into partial (created or truncated,
// 0600 as privateCreates asks) with an open, its writes and a close; with
// fsync, an fsync@openssh.com before the close. It sends the file outside
// the session's write window (writeWindowed): that bounds what a cut link
// loses of a partial to be resumed, and a small file is never resumed but
// sent again; with the window's four writes in flight at 10 ms a round
// trip, a dropoff of many small files could not exceed 400 files a second.
func (c *Carrier) writeSmall(s *Session, e Entry, partial string, fsync bool, tr Tracker) error {
	data, err := os.ReadFile(c.buf.ObjectPath(e.Hash))
	if err == nil && int64(len(data)) != e.Size {
		err = fmt.Errorf("object has %d bytes, want %d", len(data), e.Size)
	}
	if err != nil {
		return fmt.Errorf("%w %s: %s: %w", errLocal, c.buf.Dir(), e.Path, err)
	}
	f, err := s.sftp.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("host %s: create %s: %w", s.Host.Name, partial, err)
	}
	defer f.Close()
	if len(data) > 0 {
		if _, err := f.Write(data); err != nil {
			return fmt.Errorf("host %s: write %s: %w%s", s.Host.Name, partial, err, s.diskFullHint(path.Dir(partial), e.Size))
		}
	}
	tr.Add(e.Size)
	if fsync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("host %s: fsync %s: %w", s.Host.Name, partial, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("host %s: close %s: %w", s.Host.Name, partial, err)
	}
	return nil
}

// fsyncPath makes the file p's data durable with fsync@openssh.com on a
// handle of its own.
func (s *Session) fsyncPath(p string) error {
	f, err := s.sftp.OpenFile(p, os.O_WRONLY)
	if err == nil {
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("host %s: fsync %s: %w", s.Host.Name, p, err)
	}
	return nil
}
