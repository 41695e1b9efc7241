package carrier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/messor-sync/messor/protocol"
)

// maxLedgerRead bounds how much of a ledger is read to leave out lines it
// holds already; a bigger one is appended to without that (a reader takes
// a ledger's lines for a set).
const maxLedgerRead = 64 << 20

// ledgerChunk bounds one write to a ledger: whole lines in one SFTP write
// packet, which a host appending (O_APPEND) writes at once.
const ledgerChunk = 32 << 10

// exchangeReceipts is the receipt work of every visit: the receipts held
// for the host go home (handOver), and those found on it for other sources
// are taken along (collectReceipts). A failure is noted, never fails the
// visit: the receipts stay where they are for the next one.
func (c *Carrier) exchangeReceipts(ctx context.Context, s *Session, r *HostReport) {
	if c.opts.DryRun || ctx.Err() != nil {
		return
	}
	c.buf.expireReceipts(c.opts.Now(), c.opts.ReceiptMaxAge)
	if err := c.handOver(ctx, s, r); err != nil {
		r.Waiting = append(r.Waiting, FileNote{protocol.Sent, "receipts not handed over: " + err.Error()})
		c.log.Warn("receipts not handed over", "host", s.Host.Name, "err", err)
	}
	if err := c.collectReceipts(ctx, s, r); err != nil {
		c.log.Warn("receipts not collected", "host", s.Host.Name, "err", err)
	}
}

// handOver gives the host of s (their source) the receipts held for it:
// the ledger of each destination gets the lines it lacks (synced), then,
// where that destination's outbox is in keep mode, the receipted versions
// are removed from it; then the receipts are forgotten. A receipt whose
// removals could not all be settled is kept for the next visit (its
// ledger lines are not written twice).
func (c *Carrier) handOver(ctx context.Context, s *Session, r *HostReport) error {
	byDest := map[string][]heldReceipt{}
	for _, h := range c.buf.receiptsFor(s.Host.Name) {
		byDest[h.r.Dest] = append(byDest[h.r.Dest], h)
	}
	if len(byDest) == 0 {
		return nil
	}
	keepAll := c.keepMarked(s, protocol.Outbox)
	var first error
	for _, dest := range slices.Sorted(maps.Keys(byDest)) {
		hs := byDest[dest]
		n, err := c.appendLedger(ctx, s, dest, hs)
		if err != nil {
			first = firstErr(first, err)
			continue
		}
		r.Receipts += n
		keep := keepAll || c.keepMarked(s, protocol.OutboxDir(dest))
		for _, h := range hs {
			settled := true
			if keep {
				released, err := c.releaseAll(ctx, s, dest, h.r.Files)
				r.Released += released
				if err != nil {
					settled = false
					first = firstErr(first, err)
				}
			}
			if settled {
				if err := c.buf.forgetReceipt(h); err != nil {
					first = firstErr(first, fmt.Errorf("buffer %s: %w", c.buf.Dir(), err))
				}
			}
		}
	}
	return first
}

func firstErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// keepMarked reports whether dir holds a keep marker.
func (c *Carrier) keepMarked(s *Session, dir string) bool {
	st, err := s.sftp.Lstat(path.Join(dir, protocol.KeepMarker))
	return err == nil && st.Mode().IsRegular()
}

// appendLedger appends to the host's ledger for dest the lines of hs it
// does not hold, and syncs it. It returns how many it appended.
func (c *Carrier) appendLedger(ctx context.Context, s *Session, dest string, hs []heldReceipt) (int, error) {
	p := protocol.LedgerPath(dest)
	l, err := c.readLedger(s, p)
	if err != nil {
		return 0, err
	}
	have, exists := l.keys, l.exists
	var lines []string
	for _, h := range hs {
		for _, d := range h.r.Files {
			if k := d.LedgerKey(); !have[k] {
				have[k] = true
				lines = append(lines, protocol.LedgerLine(d))
			}
		}
	}
	n := len(lines)
	if n == 0 {
		return 0, nil
	}
	if l.cut {
		lines[0] = "\n" + lines[0] // the cut line ends, and stays apart
	}
	made := false
	if !exists {
		if err := s.sftp.Mkdir(protocol.Sent); err == nil {
			made = true
			s.sftp.Chmod(protocol.Sent, inboxDirPerm)
		}
	}
	f, err := s.sftp.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE)
	if err != nil {
		return 0, fmt.Errorf("host %s: open %s: %w", s.Host.Name, p, err)
	}
	defer f.Close()
	for len(lines) > 0 {
		var chunk strings.Builder
		for len(lines) > 0 && (chunk.Len() == 0 || chunk.Len()+len(lines[0]) <= ledgerChunk) {
			chunk.WriteString(lines[0])
			lines = lines[1:]
		}
		if _, err := f.Write([]byte(chunk.String())); err != nil {
			return 0, fmt.Errorf("host %s: append to %s: %w", s.Host.Name, p, err)
		}
	}
	if s.hasFsync {
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("host %s: fsync %s: %w", s.Host.Name, p, err)
		}
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("host %s: close %s: %w", s.Host.Name, p, err)
	}
	if !exists {
		dirs := []string{protocol.Sent}
		if made {
			dirs = append(dirs, protocol.Root)
		}
		for _, d := range dirs {
			if err := s.syncDir(d); err != nil && !errors.Is(err, errNotDurable) {
				return 0, fmt.Errorf("host %s: sync %s: %w", s.Host.Name, d, err)
			}
		}
	}
	return n, nil
}

// ledgerRead is what appending to a ledger needs to know of it.
type ledgerRead struct {
	keys   map[string]bool // its lines' (none, when bigger than maxLedgerRead)
	exists bool
	cut    bool // its last line has no newline (a write cut short, an edit)
}

// errNotRegular: a ledger path holds something other than a regular file
// (a FIFO, a device, a directory); receipts wait until it is one.
var errNotRegular = errors.New("not a regular file; the receipts wait until it is one")

// readLedger reads the ledger at p on the host.
func (c *Carrier) readLedger(s *Session, p string) (ledgerRead, error) {
	// Only a regular file is opened: sftp-server's open of a FIFO (or a
	// device) put in its place would block the whole session.
	st, err := s.sftp.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ledgerRead{keys: map[string]bool{}}, nil
	}
	if err == nil && !st.Mode().IsRegular() {
		return ledgerRead{}, fmt.Errorf("host %s: %s: %w", s.Host.Name, p, errNotRegular)
	}
	f, err := s.sftp.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ledgerRead{keys: map[string]bool{}}, nil
	}
	if err != nil {
		return ledgerRead{}, fmt.Errorf("host %s: open %s: %w", s.Host.Name, p, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxLedgerRead+1))
	if err != nil {
		return ledgerRead{}, fmt.Errorf("host %s: read %s: %w", s.Host.Name, p, err)
	}
	if len(data) > maxLedgerRead {
		l := ledgerRead{keys: map[string]bool{}, exists: true}
		last := make([]byte, 1)
		if st, err := f.Stat(); err == nil && st.Size() > 0 {
			if _, err := f.ReadAt(last, st.Size()-1); err == nil {
				l.cut = last[0] != '\n'
			}
		}
		return l, nil
	}
	cut := len(data) > 0 && data[len(data)-1] != '\n'
	return ledgerRead{keys: protocol.ReadLedger(data), exists: true, cut: cut}, nil
}

// releaseKept removes from a keep-mode outbox the version a receipt names,
// if it is what the outbox holds under that path: same size and mtime,
// and, checked on the claimed file, the same content (hashed on the host:
// a version saved with the same size and mtime, before or at the claim,
// is put back). A path holding another version, or nothing, is settled:
// nothing to do. A path through anything but directories (a directory
// moved out of the outbox, a symlink left in its place) is never followed.
func (c *Carrier) releaseKept(ctx context.Context, s *Session, dest string, d protocol.Delivery) (removed bool, err error) {
	remote := path.Join(protocol.OutboxDir(dest), d.Path)
	if in, err := c.inOutbox(s, dest, d.Path); err != nil || !in {
		return false, err
	}
	st, err := s.sftp.Lstat(remote)
	if errors.Is(err, fs.ErrNotExist) {
		// Gone already (a claim settled since): its lease goes too.
		return false, c.dropLease(s, dest, d.Path, remote)
	}
	if err != nil {
		return false, fmt.Errorf("host %s: stat %s: %w", s.Host.Name, remote, err)
	}
	if !st.Mode().IsRegular() || st.Size() != d.Size || st.ModTime().Unix() != d.MTime.Unix() {
		return false, nil // another version: carried on its own
	}
	if l, ok := c.readLease(s, remote); ok && l.Size == d.Size && l.MTime.Unix() == d.MTime.Unix() && l.Hash != d.Hash {
		return false, nil // its lease names other content: another version
	}
	var hashErr error
	cd := candidate{Dest: dest, Path: d.Path, Size: d.Size, MTime: st.ModTime()}
	err = c.claimCheckRemove(s, cd, cd.origin(s.Host.Name), remote, func(claim string) error {
		same, err := c.sameContent(ctx, s, claim, d)
		if err != nil {
			hashErr = err // put back, and the receipt kept for the next visit
		}
		if !same {
			return errChanged
		}
		return nil
	})
	if errors.Is(err, errNotCarried) {
		if hashErr == nil {
			c.dropStaleLease(s, remote, d)
		}
		return false, hashErr
	}
	if err != nil {
		return false, err
	}
	return true, c.dropLease(s, dest, d.Path, remote)
}

// dropStaleLease removes the lease beside remote when it names the content
// of d, which a claim just found not there (a version saved with the same
// size and mtime): the new version is carried at the next visit, not once
// the lease ends.
func (c *Carrier) dropStaleLease(s *Session, remote string, d protocol.Delivery) {
	if l, ok := c.readLease(s, remote); ok && l.Hash == d.Hash && l.Size == d.Size && l.MTime.Unix() == d.MTime.Unix() {
		s.sftp.Remove(leasePath(remote))
	}
}

// inOutbox reports whether each directory on the way to p in dest's
// outbox (outbox/<dest> included) is a directory, not a symlink to one.
func (c *Carrier) inOutbox(s *Session, dest, p string) (bool, error) {
	var dirs []string // deepest first
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		dirs = append(dirs, path.Join(protocol.OutboxDir(dest), d))
	}
	dirs = append(dirs, protocol.OutboxDir(dest))
	for _, d := range slices.Backward(dirs) {
		st, err := s.sftp.Lstat(d)
		if errors.Is(err, fs.ErrNotExist) || err == nil && !st.IsDir() {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("host %s: stat %s: %w", s.Host.Name, d, err)
		}
	}
	return true, nil
}

// sameContent reports whether the file at p on the host (of d's size)
// holds d's content, hashed on the host.
func (c *Carrier) sameContent(ctx context.Context, s *Session, p string, d protocol.Delivery) (bool, error) {
	if d.Size == 0 {
		h := sha256.Sum256(nil)
		return hex.EncodeToString(h[:]) == d.Hash, nil
	}
	got, err := s.hashRange(ctx, p, d.Size)
	if err != nil {
		return false, fmt.Errorf("host %s: hash %s: %w", s.Host.Name, p, err)
	}
	return hex.EncodeToString(got) == d.Hash, nil
}

// releasers is how many kept files a hand-over removes at once: each
// removal is a few round trips (look, claim, look, remove).
const releasers = 16

// releaseAll runs releaseKept for each of ds, several at once. It returns
// how many files it removed, and the first error met.
func (c *Carrier) releaseAll(ctx context.Context, s *Session, dest string, ds []protocol.Delivery) (int, error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var first error
	released := 0
	sem := make(chan struct{}, releasers)
	for _, d := range ds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			removed, err := c.releaseKept(ctx, s, dest, d)
			mu.Lock()
			defer mu.Unlock()
			first = firstErr(first, err)
			if removed {
				released++
			}
		}()
	}
	wg.Wait()
	return released, first
}
