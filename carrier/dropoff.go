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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/protocol"
	"github.com/pkg/sftp"
)

// resumeStep is how far before the end of a partial upload we also try to
// resume from, when the end itself does not verify (concurrent writes
// interrupted mid-flight may leave holes just before the end).
const resumeStep = maxInFlight * maxPacket

// maxConflicts bounds the "name (n).ext" search.
const maxConflicts = 1000

// Destinations lists the hosts the buffer holds files for, sorted.
func (c *Carrier) Destinations() ([]string, error) {
	ents, err := c.buf.Entries()
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, e := range ents {
		set[e.Dest] = true
	}
	var out []string
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out, nil
}

// Dropoff visits, in order, each of hosts the buffer holds files for and
// delivers them; the others are not contacted.
func (c *Carrier) Dropoff(ctx context.Context, hosts []discovery.Host) ([]*HostReport, error) {
	byDest, err := c.entriesByDest()
	if err != nil {
		return nil, err
	}
	defer c.dropSliceSums()
	var out []*HostReport
	for _, h := range hosts {
		if ctx.Err() != nil {
			break
		}
		if mine := byDest[h.Name]; len(mine) > 0 {
			delete(byDest, h.Name) // once, even if hosts names it twice
			out = append(out, c.dropoff(ctx, h, mine))
		}
	}
	return out, nil
}

// entriesByDest is what the buffer holds, by destination.
func (c *Carrier) entriesByDest() (map[string][]Entry, error) {
	ents, err := c.buf.Entries()
	if err != nil {
		return nil, err
	}
	// Grouped in place, each destination's entries still oldest pickup
	// first: a copy of them all was 14 MiB at 100,000 files.
	sort.SliceStable(ents, func(i, j int) bool { return ents[i].Dest < ents[j].Dest })
	byDest := map[string][]Entry{}
	for len(ents) > 0 {
		n := 1
		for n < len(ents) && ents[n].Dest == ents[0].Dest {
			n++
		}
		byDest[ents[0].Dest] = ents[:n:n]
		ents = ents[n:]
	}
	return byDest, nil
}

// DropoffHost delivers what the buffer holds for host h.
func (c *Carrier) DropoffHost(ctx context.Context, h discovery.Host) *HostReport {
	defer c.dropSliceSums()
	ents, err := c.buf.Entries()
	if err != nil {
		return &HostReport{Host: h.Name, Verb: "dropoff", Err: err}
	}
	mine := ents[:0] // filtered in place
	for _, e := range ents {
		if e.Dest == h.Name {
			mine = append(mine, e)
		}
	}
	return c.dropoff(ctx, h, mine)
}

// dropoff delivers mine, the entries for h.
func (c *Carrier) dropoff(ctx context.Context, h discovery.Host, mine []Entry) *HostReport {
	start := time.Now()
	r := &HostReport{Host: h.Name, Verb: "dropoff"}
	if len(mine) == 0 {
		return r
	}
	var total int64
	for _, e := range mine {
		total += e.Size
	}
	s, err := c.dial(ctx, h)
	if err != nil {
		r.Err = err
		return r
	}
	defer s.Close()
	disarm := s.closeOnCancel(ctx)
	defer disarm()
	go s.caps(ctx) // alongside the first SFTP work: a stock host's shell starts once, early

	tr := c.tracker(h.Name, "dropoff", len(mine), total)
	defer tr.Done()
	syncs := newDirSyncer()
	dirs := newDirCache(syncs)
	locks := &pathLocks{m: map[string]*pathLock{}}
	lanes := c.lanes(ctx, s, len(mine))
	batch := c.startDropBatches(ctx, s, countSmall(mine))
	workers := c.workers(s)
	if batch != nil && c.opts.Workers <= 0 {
		workers = max(workers, dropBatchWorkers)
	}
	// finish notes a delivered entry and reports, once its directory is
	// synced; from the workers (failures) and the syncer, under mu. The
	// entries delivered are released once their receipts are kept.
	var mu sync.Mutex
	delivered := make([]Entry, 0, len(mine)) // sized once: appending would copy it over and over
	finish := func(e Entry, already bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		shown := path.Join(e.Source, e.Path)
		if errors.Is(err, errNotDurable) {
			if !already {
				r.Files++
				r.Bytes += e.Size
				r.Waiting = append(r.Waiting, FileNote{shown, "delivered; kept in the buffer until a later visit finds it there (" + errNotDurable.Error() + ")"})
				return
			}
			err = nil // that later visit is this one
		}
		if err == nil {
			delivered = append(delivered, e)
		}
		switch {
		case err != nil && ctx.Err() != nil:
			r.Waiting = append(r.Waiting, FileNote{shown, "interrupted"})
		case err != nil:
			r.Failed = append(r.Failed, FileNote{shown, err.Error()})
			c.log.Error("dropoff failed", "host", h.Name, "path", shown, "err", err)
		case already:
			r.Already++
		default:
			r.Files++
			r.Bytes += e.Size
			c.log.Debug("delivered", "host", h.Name, "path", shown, "size", e.Size)
		}
	}
	forEach(ctx, c, workers, mine, func(e Entry) int64 { return e.Size },
		func(e Entry) (bool, error) {
			l := lanes.pick()
			already, err := c.deliver(ctx, l, e, dirs, locks, batch, tr)
			lanes.check(l, err)
			if err == nil {
				syncs.after(l, inboxDir(e), func(err error) { finish(e, already, err) })
			}
			return already, err
		},
		func(e Entry, already bool, err error) {
			tr.FileDone()
			if err != nil {
				finish(e, already, err)
			}
		})
	batch.close()
	syncs.close()
	c.receiptAndRelease(ctx, s, delivered, r)
	c.exchangeReceipts(ctx, s, r)
	if err := c.buf.Flush(); err != nil {
		r.Err = err
	}
	c.buf.DropIndexPages()
	r.Elapsed = time.Since(start)
	r.Resumed = tr.n.Load()
	if err := c.sessionErr(ctx, s, "dropoff"); err != nil {
		r.Err = err
	}
	return r
}

// pathLocks serialises deliveries to one final name within a run.
type pathLocks struct {
	mu sync.Mutex
	m  map[string]*pathLock
}

type pathLock struct {
	mu   sync.Mutex
	refs int
}

func (l *pathLocks) lock(p string) (unlock func()) {
	l.mu.Lock()
	pl := l.m[p]
	if pl == nil {
		pl = &pathLock{}
		l.m[p] = pl
	}
	pl.refs++
	l.mu.Unlock()
	pl.mu.Lock()
	return func() {
		pl.mu.Unlock()
		l.mu.Lock()
		if pl.refs--; pl.refs == 0 {
			delete(l.m, p)
		}
		l.mu.Unlock()
	}
}

// dirCache makes each inbox directory once per run, private to the
// destination's user (inboxDirPerm); different directories are made
// concurrently.
type dirCache struct {
	mu    sync.Mutex
	dirs  map[string]*dirState
	syncs *dirSyncer // syncs the parent of each directory made
}

type dirState struct {
	once sync.Once
	err  error
}

func newDirCache(syncs *dirSyncer) *dirCache {
	return &dirCache{dirs: map[string]*dirState{}, syncs: syncs}
}

// inboxDirPerm is the mode of the directories a carrier makes in an inbox:
// the files in them keep their sources' modes, and a directory open to the
// destination's other users would let them read a file while it is being
// delivered, before its mode is set (a server that ignores the mode asked
// in an open creates files 0666 less its umask).
const inboxDirPerm = 0o700

// ensure makes dir (and its parents up to the inbox) on the host.
func (d *dirCache) ensure(s *Session, dir string) error {
	d.mu.Lock()
	st := d.dirs[dir]
	if st == nil {
		st = &dirState{}
		d.dirs[dir] = st
	}
	d.mu.Unlock()
	st.once.Do(func() { st.err = d.make(s, dir) })
	if errors.Is(st.err, sftp.ErrSSHFxConnectionLost) {
		// That lane's channel is gone, not the directory: another
		// lane tries again.
		d.mu.Lock()
		if d.dirs[dir] == st {
			delete(d.dirs, dir)
		}
		d.mu.Unlock()
	}
	return st.err
}

func (d *dirCache) make(s *Session, dir string) error {
	if fi, err := s.sftp.Lstat(dir); err == nil {
		if fi.IsDir() {
			return nil
		}
		return fmt.Errorf("host %s: %s is not a directory", s.Host.Name, dir)
	}
	parent := path.Dir(dir)
	if parent != "." && parent != "/" && parent != dir {
		if err := d.ensure(s, parent); err != nil {
			return err
		}
	}
	if err := s.sftp.Mkdir(dir); err != nil {
		// Made meanwhile by someone else?
		if fi, serr := s.sftp.Lstat(dir); serr == nil && fi.IsDir() {
			return nil
		}
		return fmt.Errorf("host %s: mkdir %s: %w", s.Host.Name, dir, err)
	}
	// SSH_FXP_MKDIR as pkg/sftp sends it carries no mode: the host makes
	// it 0777 less its umask. Nothing is in it yet.
	if err := s.sftp.Chmod(dir, inboxDirPerm); err != nil {
		return fmt.Errorf("host %s: chmod %s: %w", s.Host.Name, dir, err)
	}
	// The new directory's own entry must last as long as the files put in
	// it: its parent is synced in the batch that syncs them, or before.
	d.syncs.after(s, parent, nil)
	return nil
}

// countSmall is how many of ents are small files.
func countSmall(ents []Entry) int {
	n := 0
	for _, e := range ents {
		if e.Size <= smallFile {
			n++
		}
	}
	return n
}

// deliver puts one entry in place, in inboxDir(e). already is true when
// identical content was found under the final name (or a conflict name)
// already. The entry may be released once that directory is synced. A
// small file is proven in a batch where b is usable.
func (c *Carrier) deliver(ctx context.Context, s *Session, e Entry, dirs *dirCache, locks *pathLocks, b *dropBatcher, tr Tracker) (already bool, err error) {
	if err := protocol.CheckHostName(e.Source); err != nil {
		return false, err
	}
	if _, err := protocol.CleanRelPath(e.Path); err != nil {
		return false, err
	}
	final := path.Join(protocol.InboxDir(e.Source), e.Path)
	dir, name := inboxDir(e), path.Base(final)
	// Two versions of one file (picked up on two visits) must not race
	// for the same free name: on a server whose rename replaces, one
	// would silently overwrite the other.
	unlock := locks.lock(final)
	defer unlock()
	want, err := hex.DecodeString(e.Hash)
	if err != nil {
		return false, fmt.Errorf("buffer: entry %s: bad hash: %w", e.Path, err)
	}
	partial := path.Join(dir, protocol.PartialName(e.Path, e.Hash, c.buf.ID()))
	left := func() fs.FileInfo { return nil }
	if e.Size > smallFile {
		// A partial an earlier visit left is looked for while the
		// names are (linkedPartial): no round trip of its own.
		left = s.lstatLater(partial)
	}
	// Where does it go? Where putting it in place never replaces a file
	// (see place), that itself tells, and a taken name is looked into
	// only then. Elsewhere, and for big files (whose upload is worth
	// sparing when a crash left them delivered already), look first.
	target := name
	if !s.noReplace || e.Size > smallFile {
		var done bool
		target, done, err = c.freeName(ctx, s, dir, name, e.Size, want)
		if err != nil {
			return false, err
		}
		if done {
			// A partial of it left by an earlier visit is of no more
			// use, and may be a second name of the file found
			// (TestPartialLinkedToDelivered).
			s.sftp.Remove(partial)
			tr.Add(e.Size)
			return true, nil
		}
	}
	if err := dirs.ensure(s, dir); err != nil {
		return false, err
	}
	if pst := left(); s.linkedPartial(dir, pst) || pst != nil && s.partialHasOtherNames(ctx, partial) {
		// Sent afresh: resumed, it would be written through.
		if err := s.sftp.Remove(partial); err != nil {
			return false, fmt.Errorf("host %s: remove %s: %w", s.Host.Name, partial, err)
		}
	}
	if e.Size <= smallFile && b.usable() {
		err = c.uploadBatched(ctx, s, b, e, partial, want, tr)
	} else {
		err = c.upload(ctx, s, e, partial, want, tr)
	}
	if err != nil {
		if e.Size <= smallFile {
			// A small file's partial is never resumed, but made
			// afresh: none is left (TestSmallUnreadableLeavesNoPartial).
			s.sftp.Remove(partial)
		}
		return false, err
	}
	if perm := e.DeliverPerm(); perm != writingPerm(perm) {
		if err := s.sftp.Chmod(partial, perm); err != nil {
			return false, fmt.Errorf("host %s: chmod %s: %w", s.Host.Name, partial, err)
		}
	}
	for i := 0; i < maxConflicts; i++ {
		err := s.place(partial, path.Join(dir, target))
		if err == nil {
			return false, nil
		}
		// The name was taken meanwhile (our rename never replaces a
		// file): look again, unless the partial itself is gone.
		if _, serr := s.sftp.Lstat(partial); serr != nil {
			return false, fmt.Errorf("host %s: rename %s: %w", s.Host.Name, final, err)
		}
		prev := target
		var done bool
		var err2 error
		target, done, err2 = c.freeName(ctx, s, dir, name, e.Size, want)
		if err2 != nil {
			return false, err2
		}
		if done {
			s.sftp.Remove(partial)
			return true, nil
		}
		if target == prev {
			return false, fmt.Errorf("host %s: rename %s: %w", s.Host.Name, final, err)
		}
	}
	return false, fmt.Errorf("host %s: rename %s: gave up", s.Host.Name, final)
}

// linkedPartial reports whether a partial left by an earlier visit (pst:
// its Lstat, nil where there is none) seems to be one of the files in dir: a hard link to a file delivered (a
// carrier killed between linking it there and removing the partial, a host
// that crashed inside its own rename), under its name, a conflict name
// before or after the free one (taken then, free now:
// TestPartialLinkedToConflictName) or any other its user gave it since,
// and which that user may have changed; resuming it would write through to
// that file (TestPartialLinkedToDelivered). dir is listed, once per
// partial found. SFTP shows no inode numbers: the same size, mode, owner
// and mtime is taken for the same file, which costs a partial that only
// looks so its resume; so does a listing that fails.
func (s *Session) linkedPartial(dir string, pst fs.FileInfo) bool {
	if pst == nil || !pst.Mode().IsRegular() {
		return false
	}
	ents, err := s.sftp.ReadDir(dir)
	if err != nil {
		return true
	}
	for _, st := range ents {
		if !strings.HasPrefix(st.Name(), protocol.ReservedPrefix) && sameFile(st, pst) {
			return true
		}
	}
	return false
}

// partialHasOtherNames reports whether the host says the partial p has
// another name anywhere on its filesystem (a link count over 1): a file
// delivered from it and then moved out of the inbox by its user, which
// linkedPartial's listing cannot see (TestPartialLinkedOutsideInbox). Only
// a stock host with exec can tell (hasher.links); elsewhere it reports
// false, and the listing alone decides.
func (s *Session) partialHasOtherNames(ctx context.Context, p string) bool {
	return s.caps(ctx).hasher.links(ctx, s, p) > 1
}

// lstatLater starts an Lstat of p; the function it returns waits for the
// answer: nil where p is not there or the call failed.
func (s *Session) lstatLater(p string) func() fs.FileInfo {
	ch := make(chan fs.FileInfo, 1)
	go func() {
		st, err := s.sftp.Lstat(p)
		if err != nil {
			st = nil
		}
		ch <- st
	}()
	return func() fs.FileInfo { return <-ch }
}

// sameFile reports whether a and b, as SFTP shows them, agree in all but
// their names.
func sameFile(a, b fs.FileInfo) bool {
	as, aok := a.Sys().(*sftp.FileStat)
	bs, bok := b.Sys().(*sftp.FileStat)
	return aok && bok && a.Mode() == b.Mode() && a.Size() == b.Size() &&
		as.Mtime == bs.Mtime && as.UID == bs.UID && as.GID == bs.GID
}

// setMTime gives partial e's mtime: after the last write (which set the
// mtime), before the sync that makes it last. A host that will not set
// times (some file systems refuse) still gets the file.
func (c *Carrier) setMTime(s *Session, partial string, e Entry) {
	if e.MTime.IsZero() {
		return
	}
	if err := s.sftp.Chtimes(partial, time.Now(), e.MTime); err != nil {
		c.log.Warn("cannot set the mtime; the file arrives with the time of delivery", "host", s.Host.Name, "path", partial, "err", err)
	}
}

// writingPerm is the mode of a partial upload of a file to be delivered
// with perm: perm, and its owner's to read and write (a read-only source
// would otherwise make the partial impossible to resume or verify); perm
// itself is set once it is verified.
func writingPerm(perm fs.FileMode) fs.FileMode { return perm | 0o600 }

// inboxDir is the directory e is delivered into.
func inboxDir(e Entry) string {
	return path.Dir(path.Join(protocol.InboxDir(e.Source), e.Path))
}

// freeName finds where content (size, want) goes in dir: the name itself,
// or "name (n).ext" when the name holds something else. done reports that
// identical content is already there under one of those names.
func (c *Carrier) freeName(ctx context.Context, s *Session, dir, name string, size int64, want []byte) (target string, done bool, err error) {
	for n := 1; n <= maxConflicts; n++ {
		cand := name
		if n > 1 {
			cand = protocol.ConflictName(name, n)
		}
		p := path.Join(dir, cand)
		st, err := s.sftp.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return cand, false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("host %s: stat %s: %w", s.Host.Name, p, err)
		}
		if st.Mode().IsRegular() && st.Size() == size {
			got, err := s.hashFound(ctx, p, st.Mode().Perm(), size)
			if err != nil {
				return "", false, err
			}
			if bytes.Equal(got, want) {
				return cand, true, nil
			}
		}
	}
	return "", false, fmt.Errorf("host %s: %s: more than %d different files want this name", s.Host.Name, path.Join(dir, name), maxConflicts)
}

// hashFound hashes the file p (of perm and size) found where a file is to
// be delivered. One its owner cannot read (delivered with a 0000 or
// write-only source's mode) is given its owner's read while it is hashed,
// then its mode back (TestUnreadableDeliveredFound).
func (s *Session) hashFound(ctx context.Context, p string, perm fs.FileMode, size int64) ([]byte, error) {
	got, err := s.hashRange(ctx, p, size)
	if !errors.Is(err, fs.ErrPermission) || perm&0o400 != 0 {
		return got, err
	}
	if err := s.sftp.Chmod(p, perm|0o400); err != nil {
		return nil, fmt.Errorf("host %s: chmod %s: %w", s.Host.Name, p, err)
	}
	got, err = s.hashRange(ctx, p, size)
	if cerr := s.sftp.Chmod(p, perm); cerr != nil && err == nil {
		err = fmt.Errorf("host %s: chmod %s back to %v: %w", s.Host.Name, p, perm, cerr)
	}
	return got, err
}

// upload writes the object for e into partial, resuming from a verified
// prefix, syncs and verifies it. A big file is verified slice by slice while
// it is being written, where the host can hash slices (sliceVerifier);
// others once written in full.
func (c *Carrier) upload(ctx context.Context, s *Session, e Entry, partial string, want []byte, tr Tracker) error {
	obj, err := os.Open(c.buf.ObjectPath(e.Hash))
	if err != nil {
		return fmt.Errorf("buffer %s: %s: %w", c.buf.Dir(), e.Path, err)
	}
	defer obj.Close()
	// A partial left by an earlier visit is resumed; a small file is
	// simply sent again, in a partial made afresh (createPartial), which
	// costs less than the round trip that would look for one.
	off, had := int64(0), int64(-1)
	var prefix hash.Hash // the local hash of [0, off) the host's matched
	if e.Size <= smallFile {
		// nothing to look for
	} else if st, err := s.sftp.Lstat(partial); err == nil && st.Mode().IsRegular() {
		had = st.Size()
		if had > 0 {
			// An earlier run was cut short: the link may drop again.
			s.cutBefore.Store(true)
			if off, prefix, err = c.resumePoint(ctx, s, obj, partial, min(had, e.Size)); err != nil {
				// Keep the partial: the next visit checks it again.
				return fmt.Errorf("host %s: checking the partial upload %s: %w", s.Host.Name, partial, err)
			}
		}
	}
	// Read back through the write handle only where the server is known to
	// serve reads on it (OpenSSH, our agent): on some servers a read on a
	// handle opened for writing is taken for a write.
	readBack := s.rwHandles && e.Size <= smallFile
	var slice int64
	if !readBack {
		slice = c.verifySlice(ctx, s, e.Size)
	}
	flags := os.O_WRONLY | os.O_CREATE
	if readBack {
		flags = os.O_RDWR | os.O_CREATE
	}
	var f *sftp.File
	if had < 0 {
		// Nothing to resume (a small file, or no regular file there).
		f, err = s.createPartial(partial, flags)
	} else {
		f, err = s.sftp.OpenFile(partial, flags)
	}
	if errors.Is(err, fs.ErrPermission) && had >= 0 {
		// A carrier killed after giving the partial a read-only
		// source's mode (before the rename) left it unwritable to the
		// host's user (TestReadOnlyPartialResumed).
		if s.sftp.Chmod(partial, writingPerm(e.DeliverPerm())) == nil {
			f, err = s.sftp.OpenFile(partial, flags)
		}
	}
	if err != nil {
		return fmt.Errorf("host %s: create %s: %w", s.Host.Name, partial, err)
	}
	defer f.Close()
	// Before any byte is written: it was created 0600 (privateCreates) or,
	// by a server that ignores the mode asked, 0666 less its umask; the
	// file is to be no more readable than its source.
	if err := f.Chmod(writingPerm(e.DeliverPerm())); err != nil {
		// Some servers set attributes only by path.
		if err2 := s.sftp.Chmod(partial, writingPerm(e.DeliverPerm())); err2 != nil {
			return fmt.Errorf("host %s: chmod %s: %w", s.Host.Name, partial, err)
		}
	}
	if had >= 0 && had != off {
		if err := f.Truncate(off); err != nil {
			return fmt.Errorf("host %s: truncate %s: %w", s.Host.Name, partial, err)
		}
	}
	if off > 0 {
		c.log.Debug("resuming upload", "host", s.Host.Name, "path", partial, "offset", off)
		tr.Resumed(off)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("host %s: seek %s: %w", s.Host.Name, partial, err)
	}
	// write sends [from, to) of the object to the same range of the partial
	// (the handle's offset is at from).
	wtr := tr
	write := func(from, to int64) error {
		var n int64
		var err error
		if e.Size <= smallFile && from == 0 && to == e.Size {
			if err = writeWhole(f, obj, to, wtr); err == nil {
				n = to
			}
		} else {
			n, err = s.writeWindowed(f, obj, from, to, wtr)
		}
		var lerr *localWriteError
		if errors.As(err, &lerr) && errors.Is(lerr.err, io.EOF) {
			// With digests kept, the send is the only read of the
			// copy: a copy cut short is told here (TestSliceSumsBufferTruncated).
			return fmt.Errorf("buffer %s: %s: the carrier's copy ends before its %d bytes: damaged in the buffer: %w", c.buf.Dir(), e.Path, e.Size, lerr.err)
		}
		if errors.As(err, &lerr) {
			return fmt.Errorf("buffer %s: %s: %w", c.buf.Dir(), e.Path, lerr.err)
		}
		if err != nil {
			return fmt.Errorf("host %s: write %s: %w%s", s.Host.Name, partial, err, s.diskFullHint(path.Dir(partial), e.Size-from))
		}
		if from+n != to {
			return fmt.Errorf("host %s: write %s: %d of %d bytes", s.Host.Name, partial, from+n, e.Size)
		}
		return nil
	}
	var v *sliceVerifier
	mismatch := func(what string) error {
		s.sftp.Remove(partial)
		if v != nil && v.kept {
			// The next attempt hashes the carrier's copy, which tells
			// a copy damaged here from bytes damaged on the way.
			forgetSliceSums(c.buf.Dir(), e.Hash)
		}
		return fmt.Errorf("host %s: %s: content does not verify after upload (%s); removed, will retry", s.Host.Name, partial, what)
	}
	t0 := time.Now()
	if slice > 0 {
		v = newSliceVerifier(ctx, s, obj, partial, e.Size, off, prefix, slice, keptSliceSums(c.buf.Dir(), e.Hash, e.Size, slice))
		defer v.stop()
		wtr = v.pace(tr)
		for i, sl := range v.slices {
			if err := write(max(off, sl.start), sl.end); err != nil {
				return err
			}
			if c.sliceWritten != nil {
				c.sliceWritten(partial, sl.start, sl.end)
			}
			if err := v.written(i); err != nil {
				return err
			}
			if bad := v.mismatch(); bad != "" {
				v.stop()
				return mismatch(bad)
			}
		}
	} else if err := write(off, e.Size); err != nil {
		return err
	}
	tWrite := time.Since(t0)
	c.setMTime(s, partial, e)
	t0 = time.Now()
	if s.hasFsync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("host %s: fsync %s: %w", s.Host.Name, partial, err)
		}
	}
	tSync := time.Since(t0)
	t0 = time.Now()
	// How long each step took (messor -v), for files that are not small:
	// the writes (in slices: with the waits for the host to hash them),
	// the fsync, and the wait for verification once both were done.
	timings := func(how string) {
		if e.Size < bigFile {
			return
		}
		args := []any{"host", s.Host.Name, "path", partial, "bytes", e.Size - off,
			"write", tWrite.Round(time.Millisecond), "fsync", tSync.Round(time.Millisecond),
			"verify", how, "verify_wait", time.Since(t0).Round(time.Millisecond)}
		if v != nil {
			args = append(args, "write_waited_for_host", v.waited.Round(time.Millisecond), "kept_digests", v.kept)
		}
		c.log.Debug("upload timings", args...)
	}
	var got []byte
	if readBack {
		// Small: read it back through the same handle, all of it and one
		// byte more to see where it ends: one round trip.
		release := holdSmall()
		buf := make([]byte, e.Size+1)
		n, err := f.ReadAt(buf, 0)
		if (err == nil || errors.Is(err, io.EOF)) && int64(n) == e.Size {
			sum := sha256.Sum256(buf[:n])
			got = sum[:]
		}
		release()
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("host %s: close %s: %w", s.Host.Name, partial, err)
	}
	if got != nil {
		timings("readback")
	} else {
		st, err := s.sftp.Lstat(partial)
		if err != nil {
			return fmt.Errorf("host %s: stat %s: %w", s.Host.Name, partial, err)
		}
		if st.Size() != e.Size {
			return fmt.Errorf("host %s: %s has %d bytes after upload, want %d", s.Host.Name, partial, st.Size(), e.Size)
		}
		if v != nil {
			bad, whole, err := v.verdict(want)
			switch {
			case err != nil:
				return err
			case bad != "":
				return mismatch(bad)
			case !whole:
				timings(fmt.Sprintf("%d slices", len(v.slices)))
				return nil
			}
			c.log.Debug("the host refused to hash a slice, or cannot; verifying the whole file", "host", s.Host.Name, "path", partial)
		}
		if got, err = s.hashRange(ctx, partial, e.Size); err != nil {
			return err
		}
		timings("whole")
	}
	if !bytes.Equal(got, want) {
		return mismatch(fmt.Sprintf("sha256 %x, want %x", got, want))
	}
	return nil
}

// resumePoint finds the longest prefix of the remote partial (of have
// bytes) that matches the object: the end; else where the last writes in
// flight before the link dropped left a hole (holeBefore); else a step
// before the end, or eight. It returns the prefix's length and the hash of
// the object's prefix that matched, positioned at its end (for the
// whole-file hash to go on from).
func (c *Carrier) resumePoint(ctx context.Context, s *Session, obj *os.File, partial string, have int64) (int64, hash.Hash, error) {
	tried := map[int64]bool{}
	for i, n := range []int64{have, 0, have - resumeStep, have - 8*resumeStep} {
		if i == 1 {
			n = c.holeBefore(ctx, s, obj, partial, have)
		}
		if n <= 0 || tried[n] {
			continue
		}
		tried[n] = true
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(obj, 0, n)); err != nil {
			return 0, nil, nil // our copy: send it all again
		}
		got, err := s.hashPrefix(ctx, partial, n)
		if errors.Is(err, errNoSession) {
			// The host would not run a command just now (few sessions
			// allowed): read the prefix back rather than fail the file
			// or start over.
			got, err = s.readbackHash(ctx, partial, n)
		}
		if err != nil && ctx.Err() != nil {
			// Interrupted, not the partial's fault: keep it.
			return 0, nil, err
		}
		if err != nil {
			c.log.Debug("cannot check partial; sending it again", "host", s.Host.Name, "path", partial, "err", err)
			return 0, nil, nil
		}
		if bytes.Equal(got, h.Sum(nil)) { // Sum leaves h as it is
			return n, h, nil
		}
	}
	return 0, nil, nil
}

// holeWindow is how far before the end of a partial upload a write may
// have been lost while later ones were written: the writes in flight when
// the link dropped (writeWindowed keeps at most this much in flight). A
// server that writes requests concurrently (messor agent) and stops when
// the link drops leaves such holes; stock sftp-server writes in order.
const holeWindow = maxWritesInFlight * maxPacket

// holeBefore returns where the first slice of flakyChunk bytes that differs
// from the object starts, within the last holeWindow bytes of the partial
// (of have bytes), where the host hashes slices; else 0.
func (c *Carrier) holeBefore(ctx context.Context, s *Session, obj *os.File, partial string, have int64) int64 {
	if !s.canHashSlices(ctx) {
		return 0
	}
	for off := max(0, have-holeWindow); off < have; off += flakyChunk {
		n := min(flakyChunk, have-off)
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(obj, off, n)); err != nil {
			return 0
		}
		got, err := s.hashSlice(ctx, partial, off, n)
		if err != nil {
			return 0
		}
		if !bytes.Equal(got, h.Sum(nil)) {
			return off
		}
	}
	return 0
}

// diskFullHint explains a failed write when the host's disk is full: stock
// sftp-server reports ENOSPC as a bare "failure". It asks statvfs@openssh.com
// where offered, and returns "" when it cannot tell.
func (s *Session) diskFullHint(dir string, need int64) string {
	if _, ok := s.sftp.HasExtension("statvfs@openssh.com"); !ok {
		return ""
	}
	vfs, err := s.sftp.StatVFS(dir)
	if err != nil {
		return ""
	}
	free := int64(vfs.Bavail * vfs.Frsize)
	if free >= need && free > 64<<10 {
		return ""
	}
	return fmt.Sprintf(" (the host's disk holding %s is full: %s free; the partial is kept, free some space there and run again)", dir, FormatSize(free))
}

// writeWindowed sends [from, to) of obj to the same range of f in chunks,
// several in flight, and returns how far from from it wrote without a gap.
// The chunks in flight over the whole session are bounded (s.window): what
// the host has not written when the link drops is lost, and with
// maxWritesInFlight packets in flight for each of several files that was
// most of what crossed a link cut every MiB. Over a link that was cut
// before (cutBefore) chunks are smaller and fewer.
func (s *Session) writeWindowed(f *sftp.File, obj io.ReaderAt, from, to int64, tr Tracker) (int64, error) {
	chunk, units, perFile := int64(maxPacket), windowUnits/maxWritesInFlight, maxWritesInFlight
	if s.cutBefore.Load() {
		chunk, units, perFile = flakyChunk, windowUnits/flakyInFlight, flakyInFlight
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		gap     = to // the lowest offset whose write failed
		failure error
		mine    = make(chan struct{}, perFile)
		free    = make(chan []byte, perFile) // buffers of writes done
	)
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return failure != nil }
	for off := from; off < to && !failed(); off += chunk {
		mine <- struct{}{}
		var buf []byte
		select {
		case buf = <-free:
		default:
			buf = make([]byte, min(chunk, to-from)) // a small file's own size
		}
		buf = buf[:min(chunk, to-off)]
		if _, err := obj.ReadAt(buf, off); err != nil {
			<-mine
			mu.Lock()
			gap, failure = min(gap, off), &localWriteError{err}
			mu.Unlock()
			break
		}
		s.acquireWindow(units)
		wg.Add(1)
		go func(off int64) {
			defer wg.Done()
			_, err := f.WriteAt(buf, off)
			s.releaseWindow(units)
			defer func() {
				select {
				case free <- buf:
				default:
				}
				<-mine
			}()
			if err != nil {
				mu.Lock()
				if off < gap {
					gap, failure = off, err
				}
				mu.Unlock()
				return
			}
			tr.Add(int64(len(buf)))
		}(off)
	}
	wg.Wait()
	return gap - from, failure
}

// acquireWindow takes n of the session's window units, all at once (so
// that writers taking several never hold some each and wait for the rest).
func (s *Session) acquireWindow(n int) {
	s.windowMu.Lock()
	defer s.windowMu.Unlock()
	for range n {
		s.window <- struct{}{}
	}
}

func (s *Session) releaseWindow(n int) {
	for range n {
		<-s.window
	}
}
