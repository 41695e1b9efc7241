package carrier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"

	"github.com/messor-sync/messor/carrier/buffer"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/durable"
	"github.com/messor-sync/messor/protocol"
)

// defaultMaxListing is Options.MaxListing's default.
const defaultMaxListing = 100_000

// listingBytesPerEntry is the wire budget per listed entry (name, the
// long name "ls -l" line and attributes; typically 100 to 150 bytes).
const listingBytesPerEntry = 512

// Pickup visits each host in turn, carrying what waits in its outbox into
// the buffer. Hosts that do not answer are reported and passed over.
func (c *Carrier) Pickup(ctx context.Context, hosts []discovery.Host) []*HostReport {
	var out []*HostReport
	for _, h := range hosts {
		if ctx.Err() != nil {
			break
		}
		out = append(out, c.PickupHost(ctx, h))
	}
	return out
}

// PickupHost carries what waits in one host's outbox.
func (c *Carrier) PickupHost(ctx context.Context, h discovery.Host) *HostReport {
	start := time.Now()
	r := &HostReport{Host: h.Name, Verb: "pickup"}
	s, err := c.dial(ctx, h)
	if err != nil {
		r.Err = err
		return r
	}
	defer s.Close()
	disarm := s.closeOnCancel(ctx)
	defer disarm()
	go s.caps(ctx) // alongside the first SFTP work: a stock host's shell starts once, early
	c.pickup(ctx, s, r)
	if err := c.buf.Flush(); err != nil && r.Err == nil {
		r.Err = err
	}
	r.Elapsed = time.Since(start)
	if err := c.sessionErr(ctx, s, "pickup"); err != nil && (r.Err == nil || s.Stalled()) {
		r.Err = err
	}
	return r
}

// pickup carries a host's outbox in rounds: each lists at most
// Options.MaxListing entries (and listingRoundBytes of replies), settles
// the claims it met, and carries what it found, until a listing is
// complete, a round carries nothing, or Options.MaxRounds rounds.
func (c *Carrier) pickup(ctx context.Context, s *Session, r *HostReport) {
	notes := newNoteSet(r)
	defer notes.bound(true)
	for round := 1; ctx.Err() == nil; round++ {
		notes.bound(false)
		l, err := c.listOutbox(ctx, s, notes)
		if err != nil {
			r.Err = err
			return
		}
		r.NoOutbox = l.noOutbox
		l.markClaimsKeep()
		c.settleClaims(s, l.claims, r)
		if round == 1 {
			// After the claims are settled (a receipt's removal cut
			// short left one), before anything is carried.
			c.exchangeReceipts(ctx, s, r)
		}
		l.markKeep()
		l.cands = c.unleased(ctx, s, l, notes)
		if l.complete {
			keep := map[string]bool{}
			for _, cd := range l.cands {
				keep[cd.origin(s.Host.Name).PartialName()] = true
			}
			if n, freed := c.buf.DropStalePartials(s.Host.Name, keep); n > 0 {
				c.log.Info("dropped partial downloads whose source changed or went away", "host", s.Host.Name, "files", n, "bytes", freed)
			}
		}
		before := r.Files
		full, removed, err := c.carryListed(ctx, s, l.cands, notes)
		if err != nil {
			r.Err = err
			return
		}
		if l.complete || ctx.Err() != nil {
			return
		}
		if r.Files == before && removed == 0 {
			// Nothing carried or removed: another round would list
			// the same.
			if full {
				notes.wait(protocol.Outbox, fmt.Sprintf("outbox not listed in full (more than %d entries); the rest waits for the next visit", c.opts.MaxListing))
				return
			}
			if l.keepAny() {
				notes.wait(protocol.Outbox, fmt.Sprintf("outbox in keep mode not listed in full (more than %d entries); the rest waits until receipts remove what was carried", c.opts.MaxListing))
				return
			}
			r.Err = fmt.Errorf("host %s: outbox has more than one listing holds (%d entries or %d MiB of replies: a directory that never ends?) and of those listed none could be carried or removed", s.Host.Name, c.opts.MaxListing, listingRoundBytes>>20)
			return
		}
		if round >= c.opts.MaxRounds {
			notes.wait(protocol.Outbox, fmt.Sprintf("outbox listed %d times in this visit and files keep appearing; the rest waits for the next visit", round))
			return
		}
		c.log.Info("outbox listed in part; listing again", "host", s.Host.Name, "carried", r.Files-before, "removed", removed)
	}
}

// carryListed carries what one listing found: it removes the outbox copies
// of files carried before (removed counts them), then fetches the rest in
// passes over what fits the buffer. full reports that some files did not
// fit.
func (c *Carrier) carryListed(ctx context.Context, s *Session, cands []candidate, notes *noteSet) (full bool, removed int, err error) {
	r := notes.r
	// Files committed before whose outbox copy is still there: a crash
	// between commit and removal, or a file we may not remove.
	origins := make([]buffer.Origin, len(cands))
	for i, cd := range cands {
		origins[i] = cd.origin(s.Host.Name)
	}
	carried, err := c.buf.Carried(origins)
	if err != nil {
		return false, 0, fmt.Errorf("host %s: %w", s.Host.Name, err)
	}
	var fresh []candidate
	for i, cd := range cands {
		if !carried[i] {
			fresh = append(fresh, cd)
			continue
		}
		// Once a visit: a file that stays is listed by every round.
		shown := path.Join(cd.Dest, cd.Path)
		met := !notes.first(alreadyKey(shown))
		if !met {
			r.Already++
		}
		if cd.Keep {
			// Held by this carrier: kept in the outbox until a
			// receipt comes back, and never carried twice.
			notes.wait(shown, "carried; kept until a receipt comes back")
			continue
		}
		err := c.blackhole(s, cd, origins[i], path.Join(protocol.OutboxDir(cd.Dest), cd.Path))
		switch {
		case errors.Is(err, errNotCarried):
			notes.wait(shown, notCarriedNote(err))
		case err != nil:
			if !met {
				notes.skip(shown, "carried already, cannot remove from outbox")
			}
			c.log.Warn("carried already, cannot remove from outbox", "host", s.Host.Name, "path", shown, "err", err)
		default:
			removed++
		}
	}
	mark := len(r.Skipped)
	defer func() {
		// Carried now and left in the outbox: met already next round.
		for _, n := range r.Skipped[min(mark, len(r.Skipped)):] {
			notes.first(alreadyKey(n.Path))
		}
	}()
	remaining := fresh
	for pass := 0; len(remaining) > 0 && ctx.Err() == nil; pass++ {
		free := c.buf.Limit() - c.buf.Used()
		take, wait := plan(remaining, free, c.buf.partialsOf(s.Host.Name))
		full = full || len(wait) > 0
		if len(take) == 0 {
			for _, w := range wait {
				notes.waitFor(c.waitNote(w))
			}
			break
		}
		var total int64
		for _, t := range take {
			total += t.Size
		}
		tr := c.tracker(s.Host.Name, "pickup", len(take), total)
		before := c.buf.Used()
		c.fetchAll(ctx, s, take, r, tr)
		tr.Done()
		r.Resumed += tr.n.Load()
		remaining = wait
		if c.buf.Used() >= before+total || len(wait) == 0 {
			// nothing was freed by dedup: what waits still won't fit
			for _, w := range wait {
				notes.waitFor(c.waitNote(w))
			}
			break
		}
	}
	return full, removed, nil
}

// maxNotes bounds each of a pickup report's lists of notes, so an outbox
// listed in many rounds cannot grow them without end; what is left out is
// counted in one last note.
const maxNotes = 10_000

// noteSet adds a listing's notes to a report once each, however many
// rounds list the same entry, and at most maxNotes to each list.
type noteSet struct {
	mu      sync.Mutex
	r       *HostReport
	seen    map[string]bool
	dropped map[*[]FileNote]int
}

func newNoteSet(r *HostReport) *noteSet {
	return &noteSet{r: r, seen: map[string]bool{}, dropped: map[*[]FileNote]int{}}
}

func (n *noteSet) add(list *[]FileNote, p, reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := p + "\x00" + reason
	switch {
	case n.seen[k]:
	case len(*list) >= maxNotes:
		n.dropped[list]++
	default:
		n.seen[k] = true
		*list = append(*list, FileNote{p, reason})
	}
}

// bound cuts the report's lists to maxNotes (some notes are added without
// the set); done adds the count of what was left out.
func (n *noteSet) bound(done bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, list := range []*[]FileNote{&n.r.Waiting, &n.r.Skipped, &n.r.Failed} {
		if len(*list) > maxNotes {
			n.dropped[list] += len(*list) - maxNotes
			*list = slices.Clip((*list)[:maxNotes])
		}
		if done && n.dropped[list] > 0 {
			*list = append(*list, FileNote{"...", fmt.Sprintf("%d more not listed here", n.dropped[list])})
		}
	}
}

func alreadyKey(shown string) string { return "already\x00" + shown }

// first reports whether k is met for the first time in this pickup.
func (n *noteSet) first(k string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen[k] {
		return false
	}
	n.seen[k] = true
	return true
}

func (n *noteSet) skip(p, reason string) { n.add(&n.r.Skipped, p, reason) }
func (n *noteSet) wait(p, reason string) { n.add(&n.r.Waiting, p, reason) }
func (n *noteSet) fail(p, reason string) { n.add(&n.r.Failed, p, reason) }
func (n *noteSet) waitFor(f FileNote)    { n.wait(f.Path, f.Reason) }

// listConcurrency is how many directories are listed at once: each listing
// costs round trips (open, read, read to the end, close), and a deep tree
// would otherwise pay them one by one. On a slow link (a round trip of
// 2 ms or more) four times as many hide them: a tree of 112 directories
// over a 10 ms link was listed in 0.49 s with 16.
func listConcurrency(s *Session) int {
	if s.rtt >= 2*time.Millisecond {
		return 64
	}
	return 16
}

// listingRoundBytes bounds the SFTP replies one listing round takes in: the
// entries they become stay within a few times that in memory (a name costs
// its bytes, an entry about 150 bytes more, a hostile extended attribute
// 32 bytes for 8 on the wire), well within the carrier's budget.
const listingRoundBytes = 16 << 20

// listing is what one listing round found.
type listing struct {
	cands  []candidate
	claims []foundClaim
	// complete: every directory was listed to its end, within the round's
	// bounds.
	complete bool
	noOutbox bool // the host has no messor/outbox/ at all
	// Keep mode (lease.go): marked for every destination, or by
	// destination; the leases met, by path on the host.
	keepAll bool
	keep    map[string]bool
	leases  map[string]bool
}

// listOutbox walks messor/outbox/ without following symlinks, listing many
// directories at once. It stops at Options.MaxListing entries or
// listingRoundBytes of replies and returns what it found (not complete):
// the caller carries that and lists again. A destination directory that
// cannot be listed is reported and passed over.
func (c *Carrier) listOutbox(ctx context.Context, s *Session, notes *noteSet) (*listing, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var cut atomic.Bool
	budget := min(int64(c.opts.MaxListing)*listingBytesPerEntry, listingRoundBytes)
	s.rx.arm(budget, func() { cut.Store(true); cancel() })
	defer s.rx.disarm()
	dests, err := s.sftp.ReadDirContext(lctx, protocol.Outbox)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if cut.Load() {
		return nil, fmt.Errorf("host %s: list %s: more than %d bytes of entries", s.Host.Name, protocol.Outbox, budget)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return &listing{complete: true, noOutbox: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("host %s: list %s: %w", s.Host.Name, protocol.Outbox, err)
	}
	w := &outboxWalk{c: c, s: s, notes: notes, cut: &cut, stop: cancel,
		sem: make(chan struct{}, listConcurrency(s)), now: c.opts.Now()}
	for _, d := range dests {
		name := d.Name()
		if !d.IsDir() {
			if w.l.ownTop(name, d.Mode()) {
				continue
			}
			if protocol.CheckName(name) == nil {
				notes.skip(name, "not in a destination directory")
			}
			continue
		}
		if err := protocol.CheckHostName(name); err != nil {
			notes.skip(name+"/", "bad destination name")
			c.log.Warn("skipped: bad destination name", "host", s.Host.Name, "dest", name, "err", err)
			continue
		}
		w.wg.Add(1)
		go w.walk(lctx, name, "", 0)
	}
	w.wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.l.complete = !cut.Load()
	return &w.l, nil
}

// outboxWalk is one listing round's walk of the destination directories.
type outboxWalk struct {
	c     *Carrier
	s     *Session
	notes *noteSet
	cut   *atomic.Bool
	stop  func()
	sem   chan struct{}
	now   time.Time
	wg    sync.WaitGroup

	mu   sync.Mutex // guards l, seen
	l    listing
	seen int
}

// walk lists outbox/<dest>/<rel> and what is below it.
func (w *outboxWalk) walk(ctx context.Context, dest, rel string, depth int) {
	defer w.wg.Done()
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	dir := path.Join(protocol.OutboxDir(dest), rel)
	ents, err := w.s.sftp.ReadDirContext(ctx, dir)
	<-w.sem
	if err != nil && ctx.Err() == nil {
		// This directory alone: the rest of the outbox is still carried.
		shown := path.Join(dest, rel) + "/"
		if errors.Is(err, fs.ErrNotExist) {
			w.notes.skip(shown, "directory gone while listed")
		} else {
			w.notes.fail(shown, "cannot list: "+err.Error())
		}
		w.c.log.Warn("cannot list an outbox directory", "host", w.s.Host.Name, "dir", dir, "err", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range ents {
		if w.seen++; w.seen > w.c.opts.MaxListing {
			w.cut.Store(true)
			w.stop()
			return
		}
		w.entry(ctx, dest, rel, depth, e)
	}
}

// entry sorts one listed entry: a candidate, a claim, a directory to walk,
// or a note. w.mu is held.
func (w *outboxWalk) entry(ctx context.Context, dest, rel string, depth int, e fs.FileInfo) {
	name := e.Name()
	p := path.Join(rel, name)
	shown := path.Join(dest, p)
	mode := e.Mode()
	if err := protocol.CheckName(name); err != nil {
		if cl, cerr := protocol.ParseClaim(name); cerr == nil && mode.IsRegular() {
			w.l.claims = append(w.l.claims, foundClaim{Dest: dest, Dir: rel, Name: name, Size: e.Size(), MTime: e.ModTime(), claim: cl})
			return
		}
		if w.l.own(dest, rel, name, mode) || strings.HasPrefix(name, protocol.ReservedPrefix) {
			return // messor's own
		}
		w.notes.skip(shown, "bad name")
		w.c.log.Warn("skipped: bad name", "host", w.s.Host.Name, "path", shown, "err", err)
		return
	}
	switch {
	case mode&fs.ModeSymlink != 0:
		w.notes.skip(shown, "symlink")
		w.c.log.Warn("skipped: symlinks are not followed", "host", w.s.Host.Name, "path", shown)
	case mode.IsDir():
		if depth+1 >= protocol.MaxDepth {
			w.notes.skip(shown, "too deep")
			return
		}
		w.wg.Add(1)
		go w.walk(ctx, dest, p, depth+1)
	case mode.IsRegular():
		if _, err := protocol.CleanRelPath(p); err != nil {
			w.notes.skip(shown, "bad name")
			return
		}
		if w.c.opts.Settle > 0 && w.now.Sub(e.ModTime()) < w.c.opts.Settle {
			w.notes.wait(shown, "still being written")
			return
		}
		w.l.cands = append(w.l.cands, candidate{Dest: dest, Path: p, Size: e.Size(), MTime: e.ModTime(), Perm: e.Mode().Perm()})
	default:
		w.notes.skip(shown, "not a regular file")
		w.c.log.Warn("skipped: not a regular file", "host", w.s.Host.Name, "path", shown, "mode", mode)
	}
}

// fetchAll downloads take with the carrier's workers.
func (c *Carrier) fetchAll(ctx context.Context, s *Session, take []candidate, r *HostReport, tr Tracker) {
	lanes := c.lanes(ctx, s, len(take))
	bt := c.startBatches(ctx, s, take) // small files in archives (batch.go)
	defer bt.stop(ctx)
	forEach(ctx, c, c.workers(s), take, func(cd candidate) int64 { return cd.Size },
		func(cd candidate) (fetchResult, error) {
			l := lanes.pick()
			res, err := c.fetchOne(ctx, bt, l, cd, tr)
			lanes.check(l, err)
			return res, err
		},
		func(cd candidate, res fetchResult, err error) {
			tr.FileDone()
			shown := path.Join(cd.Dest, cd.Path)
			switch {
			case errors.Is(err, errChanged):
				r.Waiting = append(r.Waiting, FileNote{shown, "changed while read"})
				c.log.Info("changed while read, waits for the next visit", "host", s.Host.Name, "path", shown)
			case errors.Is(err, errNoRoom):
				r.Waiting = append(r.Waiting, FileNote{shown, "over the buffer limit"})
			case err != nil && ctx.Err() != nil:
				// Cut short by the interruption, not a failure of its
				// own; the partial is kept for the next run.
				r.Waiting = append(r.Waiting, FileNote{shown, "interrupted"})
			case err != nil:
				r.Failed = append(r.Failed, FileNote{shown, err.Error()})
				c.log.Error("pickup failed", "host", s.Host.Name, "path", shown, "err", err)
			default:
				r.Files++
				r.Bytes += cd.Size
				if res.dedup {
					r.Dedup++
				}
				if cd.Keep {
					r.Kept++
				}
				switch {
				case errors.Is(res.removeErr, errNotCarried):
					r.Waiting = append(r.Waiting, FileNote{shown, notCarriedNote(res.removeErr)})
				case res.removeErr != nil:
					r.Skipped = append(r.Skipped, FileNote{shown, "carried, cannot remove from outbox"})
					c.log.Warn("carried, but cannot remove from outbox", "host", s.Host.Name, "path", shown, "err", res.removeErr)
				}
				c.log.Debug("picked up", "host", s.Host.Name, "path", shown, "size", cd.Size)
			}
		})
}

var (
	errChanged = errors.New("source changed while read")
	errNoRoom  = errors.New("no room in the buffer")
)

type fetchResult struct {
	dedup     bool
	removeErr error
}

// fetch carries one file: resumable download with hashing, source check,
// fsync, commit, then removal from the outbox. A partial left by an earlier
// run is resumed only from a prefix proven equal to the source's (see
// checkPartial), and the whole file is then proven again before the source
// may go (verifySource with resumed).
func (c *Carrier) fetch(ctx context.Context, s *Session, cd candidate, tr Tracker) (fetchResult, error) {
	var res fetchResult
	o := cd.origin(s.Host.Name)
	remote := path.Join(protocol.OutboxDir(cd.Dest), cd.Path)
	pp := c.buf.PartialPath(o)
	if cd.Size <= smallFile {
		if _, err := os.Lstat(pp); errors.Is(err, fs.ErrNotExist) {
			return c.fetchSmall(ctx, s, cd, o, remote, tr)
		}
	}

	lf, err := os.OpenFile(pp, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return res, fmt.Errorf("buffer %s: %w", c.buf.Dir(), err)
	}
	defer lf.Close()
	st, err := lf.Stat()
	if err != nil {
		return res, fmt.Errorf("buffer %s: %w", c.buf.Dir(), err)
	}
	have := st.Size()
	if !c.buf.Reserve(cd.Size, have) {
		return res, errNoRoom
	}
	committed := false
	defer func() {
		if !committed {
			// What is on disk now: the partial may have been removed
			// (the source changed), and lf.Stat would still see it.
			keep := int64(0)
			if st, err := os.Stat(pp); err == nil {
				keep = st.Size()
			}
			c.buf.Unreserve(cd.Size, keep)
		}
	}()
	if have > cd.Size {
		if err := lf.Truncate(0); err != nil {
			return res, fmt.Errorf("buffer %s: %w", c.buf.Dir(), err)
		}
		have = 0
	}
	if have > 0 {
		// An earlier run was cut short: the link may drop again.
		s.cutBefore.Store(true)
	}
	from, h, err := c.checkPartial(ctx, s, remote, lf, have)
	if err != nil {
		return res, err
	}
	if from > 0 {
		c.log.Debug("resuming download", "host", s.Host.Name, "path", remote, "offset", from)
		tr.Resumed(from)
	}
	rf, err := s.sftp.Open(remote)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			os.Remove(pp)
			return res, errChanged
		}
		return res, fmt.Errorf("host %s: open %s: %w", s.Host.Name, remote, err)
	}
	defer rf.Close()
	sc := c.newSourceCheck(ctx, s, remote, cd.Size, from, h, lf)
	defer sc.stop()
	hw := sc.tee(h)
	var sums *sliceSums // for the dropoff (slicesums.go); sc hashes them where it runs
	if sc == nil {
		if sums = c.newSliceSums(cd.Size, from); sums != nil {
			hw = io.MultiWriter(hw, sums)
		}
	}
	t0 := time.Now()
	err = c.readStream(s, rf, remote, cd, stream{from: from, compare: have}, lf, hw, tr)
	t1 := time.Now()
	var lerr *localWriteError
	if errors.As(err, &lerr) {
		// Our own disk, not the host: say so, and keep the partial.
		hint := ""
		if errors.Is(err, syscall.ENOSPC) {
			hint = " (the disk holding the buffer is full; the partial is kept, free some space and run again)"
		}
		return res, fmt.Errorf("buffer %s: carrying %s: %w%s", c.buf.Dir(), remote, lerr.err, hint)
	}
	if err == nil {
		err = sameVersion(func() (fs.FileInfo, error) { return s.sftp.Lstat(remote) }, cd)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err == nil {
		// Resumed from a prefix the host hashed before the rest was read:
		// proven again, unless that prefix was all of it.
		err = c.checkSource(ctx, s, sc, remote, cd.Size, sum, from > 0 && from < cd.Size)
	}
	if errors.Is(err, errChanged) {
		os.Remove(pp)
	}
	if err != nil {
		// Anything else (the link dropped) keeps every byte written.
		return res, err
	}
	// No fsync here: the commit makes a whole batch durable at once.
	if err := lf.Close(); err != nil {
		return res, fmt.Errorf("buffer %s: %w", c.buf.Dir(), err)
	}
	t2 := time.Now()
	res, err = c.commitAndRemove(s, cd, o, remote, sum, func(e Entry) (bool, error) { return c.buf.Commit(e, o, pp, cd.Size) })
	committed = err == nil
	c.log.Debug("download timings", "host", s.Host.Name, "path", remote, "stream", t1.Sub(t0).Round(time.Millisecond),
		"verify", t2.Sub(t1).Round(time.Millisecond), "commit_and_remove", time.Since(t2).Round(time.Millisecond))
	if committed {
		c.keepDigests(sum, cd.Size, sums, sc)
	}
	return res, err
}

// checkPartial decides where a download with a partial of have bytes goes
// on: from have, with h holding the partial's hash, where the host hashed
// the same prefix of the source (an agent's request or a command); else
// from 0 (from = 0), the source read whole again and compared with the
// partial as it comes (see stream), so that the carried bytes are all read
// in this run. A prefix the host hashes differently (the source changed in
// place, mtime and all, or the partial is damaged) is never trusted.
func (c *Carrier) checkPartial(ctx context.Context, s *Session, remote string, lf *os.File, have int64) (from int64, h hash.Hash, err error) {
	h = sha256.New()
	if have == 0 {
		return 0, h, nil
	}
	if s.caps(ctx).hasher.onHost() {
		if _, err := io.Copy(h, io.NewSectionReader(lf, 0, have)); err != nil {
			return 0, nil, fmt.Errorf("buffer %s: rehash partial: %w", c.buf.Dir(), err)
		}
		got, err := s.hashPrefix(ctx, remote, have)
		switch {
		case err == nil && bytes.Equal(got, h.Sum(nil)):
			c.log.Debug("resuming download", "host", s.Host.Name, "path", remote, "offset", have)
			return have, h, nil
		case err == nil:
			c.log.Info("a partial download is not the source's start (changed in place, or damaged); reading it whole again", "host", s.Host.Name, "path", remote, "partial", have)
		case ctx.Err() != nil:
			return 0, nil, err
		default:
			c.log.Debug("cannot hash the partial's prefix on the host; reading it whole again", "host", s.Host.Name, "path", remote, "err", err)
		}
		h.Reset()
	}
	return 0, h, nil
}

// fetchSmall carries a small file that has no partial: one read of all of
// it (and one byte more, to see it end where it should), held in memory and
// written into the buffer at commit, straight under its content's name.
func (c *Carrier) fetchSmall(ctx context.Context, s *Session, cd candidate, o buffer.Origin, remote string, tr Tracker) (fetchResult, error) {
	var res fetchResult
	if !c.buf.Reserve(cd.Size, 0) {
		return res, errNoRoom
	}
	committed := false
	defer func() {
		if !committed {
			c.buf.Unreserve(cd.Size, 0)
		}
	}()
	rf, err := s.sftp.Open(remote)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return res, errChanged
		}
		return res, fmt.Errorf("host %s: open %s: %w", s.Host.Name, remote, err)
	}
	// The close needs no waiting for.
	defer func() { go rf.Close() }()
	data, err := c.readSmall(s, rf, remote, cd)
	if err != nil {
		return res, err
	}
	tr.Add(int64(len(data)))
	res, err = c.keepSmall(ctx, s, cd, o, remote, data)
	committed = err == nil
	return res, err
}

// keepSmall commits the bytes read of a small file, once the host shows
// it still as listed (read whole before this lstat: no change began after
// the listing and before the read ended), then removes it from the outbox.
func (c *Carrier) keepSmall(ctx context.Context, s *Session, cd candidate, o buffer.Origin, remote string, data []byte) (fetchResult, error) {
	if err := sameVersion(func() (fs.FileInfo, error) { return s.sftp.Lstat(remote) }, cd); err != nil {
		return fetchResult{}, err
	}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	if err := c.verifySource(ctx, s, remote, cd.Size, sum, false); err != nil {
		return fetchResult{}, err
	}
	return c.commitAndRemove(s, cd, o, remote, sum, func(e Entry) (bool, error) { return c.buf.CommitData(e, o, data, cd.Size) })
}

// commitAndRemove records the carried file in the buffer with commit, then
// removes it from the outbox.
func (c *Carrier) commitAndRemove(s *Session, cd candidate, o buffer.Origin, remote, sum string, commit func(Entry) (dedup bool, err error)) (fetchResult, error) {
	e := Entry{Source: s.Host.Name, Dest: cd.Dest, Path: cd.Path, Hash: sum, Size: cd.Size, MTime: cd.MTime, PickedAt: c.opts.Now(),
		Perm: cd.Perm, HasPerm: true}
	dedup, err := commit(e)
	if err != nil {
		return fetchResult{}, err
	}
	if cd.Keep {
		c.keep(s, cd, remote, sum)
		return fetchResult{dedup: dedup}, nil
	}
	return fetchResult{dedup: dedup, removeErr: c.blackhole(s, cd, o, remote)}, nil
}

// verifySource compares sum with the source's hash computed on the host:
// always for a resumed download (its prefix was read on an earlier run),
// and where that is cheap (an agent) with VerifySource for every file.
// errChanged if they differ.
func (c *Carrier) verifySource(ctx context.Context, s *Session, remote string, size int64, sum string, resumed bool) error {
	if size == 0 || !resumed && (!c.opts.VerifySource || !s.caps(ctx).hasher.batches()) {
		return nil
	}
	hs, err := s.hashRange(ctx, remote, size)
	if err != nil {
		return err
	}
	if hex.EncodeToString(hs) != sum {
		return errChanged
	}
	return nil
}

// blackhole removes a committed file from the outbox, only now that its
// copy is committed, by a claim (claimAndRemove). It returns the error of a
// removal that failed (reported; the file is remembered as carried), or
// errNotCarried when a new version was found and put back.
func (c *Carrier) blackhole(s *Session, cd candidate, o buffer.Origin, remote string) error {
	err := c.claimAndRemove(s, cd, o, remote)
	if err == nil && cd.Leased {
		// Its outbox was in keep mode when it was leased: the lease
		// goes with it (one left by a failure is only a stale name).
		if lerr := c.dropLease(s, cd.Dest, cd.Path, remote); lerr != nil {
			c.log.Warn("removed, its lease stays", "host", s.Host.Name, "path", remote, "err", lerr)
		}
	}
	return err
}

// smallFile is the size up to which a file is read in one go.
const smallFile = 256 << 10

// readSmall reads a whole small file.
func (c *Carrier) readSmall(s *Session, rf *sftp.File, remote string, cd candidate) ([]byte, error) {
	buf := make([]byte, cd.Size+1)
	n, err := rf.ReadAt(buf, 0)
	if err != nil && !atEnd(err) {
		return nil, fmt.Errorf("host %s: read %s: %w", s.Host.Name, remote, err)
	}
	if int64(n) != cd.Size {
		return nil, errChanged // shorter or longer than listed
	}
	return buf[:n], nil
}

// stream says where a download reads from: the source from offset from,
// and up to compare the bytes read are compared with the partial's rather
// than written (the first that differs, and all after it, are written, the
// partial cut there first).
type stream struct{ from, compare int64 }

// readStream reads a file from st.from into lf, hashing into h, with many
// reads in flight.
func (c *Carrier) readStream(s *Session, rf *sftp.File, remote string, cd candidate, st stream, lf *os.File, h io.Writer, tr Tracker) error {
	if err := sameVersion(rf.Stat, cd); err != nil {
		return err
	}
	if _, err := rf.Seek(st.from, io.SeekStart); err != nil {
		return fmt.Errorf("host %s: seek %s: %w", s.Host.Name, remote, err)
	}
	// Hash on another core while this one receives and writes.
	ah := newAsyncHash(h)
	defer ah.Close()
	pw := &partialWriter{f: lf, off: st.from, compare: st.compare, done: st.from}
	w := io.MultiWriter(pw, ah, trackWriter{tr})
	var n int64
	var err error
	if s.cutBefore.Load() {
		n, err = readWindowed(rf, limitWriter(w, cd.Size-st.from), st.from)
	} else {
		n, err = rf.WriteTo(limitWriter(w, cd.Size-st.from))
	}
	var lerr *localWriteError
	if errors.As(err, &lerr) {
		return err
	}
	if err != nil && !errors.Is(err, errTooLong) {
		return fmt.Errorf("host %s: read %s: %w", s.Host.Name, remote, err)
	}
	if errors.Is(err, errTooLong) || st.from+n != cd.Size {
		return errChanged
	}
	return nil
}

// readWindowed is rf.WriteTo(w) from off in chunks of flakyChunk, one at a
// time: over a link that was cut before, what is lost when it drops again
// is the part of a reply received, up to a packet per file in flight.
func readWindowed(rf *sftp.File, w io.Writer, off int64) (int64, error) {
	buf := make([]byte, flakyChunk)
	var n int64
	for {
		k, err := rf.ReadAt(buf, off+n)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if atEnd(err) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// atEnd reports whether err from a read of a host file is its end: io.EOF
// itself, as pkg/sftp returns it for the server's end of file. A wrapped
// io.EOF ("failed to send packet: EOF") is the link dropping: taken for
// the end, the short file would count as changed, its partial deleted.
func atEnd(err error) bool { return err == io.EOF }

// sameVersion checks that the file still has the size and mtime it was
// listed with.
func sameVersion(stat func() (fs.FileInfo, error), cd candidate) error {
	st, err := stat()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errChanged
		}
		return err
	}
	if !st.Mode().IsRegular() || st.Size() != cd.Size || st.ModTime().Unix() != cd.MTime.Unix() {
		return errChanged
	}
	return nil
}

var errTooLong = errors.New("more bytes than listed")

// localWriteError marks errors writing the buffer's own files, so they
// are not mistaken for the host's.
type localWriteError struct{ err error }

func (e *localWriteError) Error() string { return e.err.Error() }
func (e *localWriteError) Unwrap() error { return e.err }

// asyncHash feeds a hash from its own goroutine: copies of what is written
// go through a small queue, so hashing a big file overlaps receiving it.
// Close waits until everything written is hashed.
type asyncHash struct {
	h     io.Writer
	ch    chan []byte
	done  chan struct{}
	free  chan []byte
	close sync.Once
}

func newAsyncHash(h io.Writer) *asyncHash {
	a := &asyncHash{h: h, ch: make(chan []byte, 8), done: make(chan struct{}), free: make(chan []byte, 10)}
	go func() {
		defer close(a.done)
		for b := range a.ch {
			a.h.Write(b)
			select {
			case a.free <- b:
			default:
			}
		}
	}()
	return a
}

func (a *asyncHash) Write(p []byte) (int, error) {
	var b []byte
	select {
	case b = <-a.free:
	default:
	}
	if cap(b) < len(p) {
		b = make([]byte, len(p), max(len(p), maxPacket))
	}
	b = b[:len(p)]
	copy(b, p)
	a.ch <- b
	return len(p), nil
}

// Close waits for the hash to catch up. It may be called more than once.
func (a *asyncHash) Close() {
	a.close.Do(func() { close(a.ch) })
	<-a.done
}

// partialWriter writes a download into its partial at off. Bytes before
// compare are the partial's already: they are compared, not written; at the
// first that differs the partial is cut there and written from then on. As
// it goes it starts the disk writing behind it, so that the fsync at commit
// finds little left to do instead of the whole file.
type partialWriter struct {
	f            *os.File
	off, compare int64 // next offset; the end of what is compared
	done         int64 // bytes handed to writeback
	cmp          []byte
}

// writebackChunk is how much is written before writeback is started.
const writebackChunk = 8 << 20

func (w *partialWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && w.off < w.compare {
		k := int(min(int64(len(p)), w.compare-w.off))
		if cap(w.cmp) < k {
			w.cmp = make([]byte, k)
		}
		old := w.cmp[:k]
		if _, err := io.ReadFull(io.NewSectionReader(w.f, w.off, int64(k)), old); err != nil {
			return total - len(p), &localWriteError{err}
		}
		same := commonPrefix(old, p[:k])
		w.off += int64(same)
		p = p[same:]
		if same < k {
			if err := w.f.Truncate(w.off); err != nil {
				return total - len(p), &localWriteError{err}
			}
			w.compare = w.off
		}
	}
	if len(p) == 0 {
		return total, nil
	}
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	if err != nil {
		return total - len(p) + n, &localWriteError{err}
	}
	if w.off-w.done >= writebackChunk {
		durable.StartWriteback(w.f, w.done, w.off-w.done)
		w.done = w.off
	}
	return total, nil
}

// commonPrefix is how many bytes a and b (as long as a) agree on from
// their start.
func commonPrefix(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

type limitedW struct {
	w io.Writer
	n int64
}

func limitWriter(w io.Writer, n int64) io.Writer { return &limitedW{w, n} }

func (l *limitedW) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, errTooLong
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

type trackWriter struct{ t Tracker }

func (t trackWriter) Write(p []byte) (int, error) {
	t.t.Add(int64(len(p)))
	return len(p), nil
}
