package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/messor-sync/messor/protocol"
)

// receiptDelivered makes the receipts of files delivered to the host of s
// (their directories synced): one per source, kept in the buffer first
// (durably), then written on the host beside the inbox. Only then may the
// entries be released: a carrier killed before keeps them, and the next
// visit finds them delivered and receipts them again. A receipt that
// cannot be written on the host still goes home in the buffer.
func (c *Carrier) receiptDelivered(ctx context.Context, s *Session, done []Entry) (saved bool, err error) {
	bySource := map[string][]protocol.Delivery{}
	now := c.opts.Now()
	for _, e := range done {
		bySource[e.Source] = append(bySource[e.Source], protocol.Delivery{
			Path: e.Path, Size: e.Size, MTime: e.MTime, Hash: e.Hash, At: now, Carrier: c.claimID()})
	}
	var first error
	for _, source := range slices.Sorted(maps.Keys(bySource)) {
		r := protocol.Receipt{Source: source, Dest: s.Host.Name, Files: bySource[source]}
		content := protocol.FormatReceipt(r)
		// A line per file: the content says it all from here on.
		r.Files, bySource[source] = nil, nil
		name, err := protocol.ReceiptName(now, c.claimID(), content)
		if err == nil {
			err = c.buf.saveReceipt(r, name, content)
		}
		if err != nil {
			return false, err
		}
		if err := c.putReceipt(ctx, s, source, name, content); err != nil && first == nil {
			first = err
		}
	}
	return true, first
}

// putReceipt writes a receipt on the destination durably: into a partial
// beside its name, synced, renamed into place (never replacing: the same
// name holds the same content), and the directory synced.
func (c *Carrier) putReceipt(ctx context.Context, s *Session, source, name string, content []byte) error {
	dir := protocol.ReceiptDir(source)
	for _, d := range []string{path.Dir(dir), dir} {
		if err := s.sftp.Mkdir(d); err != nil {
			if st, serr := s.sftp.Lstat(d); serr != nil || !st.IsDir() {
				return fmt.Errorf("host %s: mkdir %s: %w", s.Host.Name, d, err)
			}
		} else if err := s.sftp.Chmod(d, inboxDirPerm); err != nil {
			return fmt.Errorf("host %s: chmod %s: %w", s.Host.Name, d, err)
		}
	}
	final := path.Join(dir, name)
	partial := path.Join(dir, protocol.PartialName(name, "receipt", c.buf.ID()))
	f, err := s.createPartial(partial, os.O_WRONLY)
	if err != nil {
		return fmt.Errorf("host %s: create %s: %w", s.Host.Name, partial, err)
	}
	_, err = f.Write(content)
	if err == nil && s.hasFsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.place(partial, final)
		if _, serr := s.sftp.Lstat(final); err != nil && serr == nil {
			err = nil // there already: the same name is the same receipt
			s.sftp.Remove(partial)
		}
	}
	if err != nil {
		s.sftp.Remove(partial)
		return fmt.Errorf("host %s: receipt %s: %w", s.Host.Name, final, err)
	}
	for _, d := range []string{dir, path.Dir(dir), protocol.Inbox} {
		if err := s.syncDir(d); err != nil {
			return fmt.Errorf("host %s: sync %s: %w", s.Host.Name, d, err)
		}
	}
	return nil
}

// collectReceipts copies into the buffer the receipts found on the host of
// s for other sources, and removes from the host those this carrier handed
// to their source already, and those older than Options.ReceiptMaxAge.
func (c *Carrier) collectReceipts(ctx context.Context, s *Session, r *HostReport) error {
	top := protocol.Inbox + "/" + protocol.ReceiptsDirName
	sources, err := listBounded(ctx, s, top)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("host %s: list %s: %w", s.Host.Name, top, err)
	}
	now := c.opts.Now()
	room, full := maxCollected-c.buf.collectedFrom(s.Host.Name), false
	var hostNow time.Time // the host's clock, learnt once a receipt looks old
	for _, sd := range sources {
		source := sd.Name()
		if !sd.IsDir() || protocol.CheckHostName(source) != nil || source == s.Host.Name {
			continue
		}
		dir := protocol.ReceiptDir(source)
		files, err := listBounded(ctx, s, dir)
		if err != nil {
			c.log.Warn("cannot list receipts", "host", s.Host.Name, "dir", dir, "err", err)
			continue
		}
		sort.Slice(files, func(i, j int) bool { return files[i].Name() < files[j].Name() })
		for _, f := range files {
			p := path.Join(dir, f.Name())
			if abandonedPartial(f) && c.oldOnHost(s, dir, f, &hostNow, partialMaxAge) {
				s.sftp.Remove(p) // litter of a carrier killed while writing a receipt
				continue
			}
			at, _, err := protocol.ParseReceiptName(f.Name())
			if err != nil || !f.Mode().IsRegular() {
				continue
			}
			held, home := c.buf.hasReceipt(source, s.Host.Name, f.Name())
			switch {
			case home || now.Sub(at) > c.opts.ReceiptMaxAge && c.oldOnHost(s, dir, f, &hostNow, c.opts.ReceiptMaxAge):
				if err := s.sftp.Remove(p); err == nil || errors.Is(err, fs.ErrNotExist) {
					c.buf.dropHomeMark(s.Host.Name, source, f.Name())
				}
			case held:
			case receiptCost(f.Size()) > room:
				if !full {
					c.log.Warn("receipts left on the host: enough held from it", "host", s.Host.Name, "max_bytes", maxCollected)
				}
				full = true
			default:
				room -= receiptCost(f.Size())
				if err := c.copyReceipt(s, source, p, f); err != nil {
					c.log.Warn("receipt not taken", "host", s.Host.Name, "path", p, "err", err)
					continue
				}
				r.Collected++
			}
		}
	}
	return nil
}

// partialMaxAge is the age after which a receipt partial is abandoned: a
// receipt is written in one round of requests, so a partial this old was
// left by a carrier killed or cut off while writing it. Removing one still
// being written would only fail that write: its carrier saved the receipt
// in its buffer first, and takes it home itself.
const partialMaxAge = 24 * time.Hour

// abandonedPartial: fi is a receipt partial (its age decides).
func abandonedPartial(fi fs.FileInfo) bool {
	return fi.Mode().IsRegular() && strings.HasPrefix(fi.Name(), protocol.PartialPrefix)
}

// oldOnHost reports whether the file fi in dir is older than maxAge by
// the host's own clock (its mtime against the
// mtime of a file made there now, learnt once into *hostNow), so that a
// carrier whose clock is far ahead removes no receipt still to go home.
// When the host's clock cannot be learnt, it is not old.
func (c *Carrier) oldOnHost(s *Session, dir string, fi fs.FileInfo, hostNow *time.Time, maxAge time.Duration) bool {
	if hostNow.IsZero() {
		p := path.Join(dir, protocol.PartialName("clock", "receipt", c.buf.ID()))
		f, err := s.createPartial(p, os.O_WRONLY)
		if err != nil {
			return false
		}
		f.Close()
		st, err := s.sftp.Lstat(p)
		s.sftp.Remove(p)
		if err != nil {
			return false
		}
		*hostNow = st.ModTime()
	}
	return hostNow.Sub(fi.ModTime()) > maxAge
}

// maxCollected bounds what a carrier holds of the receipts it took from one
// destination (by receiptCost), so that a destination planting receipts
// without end costs it bounded disk and memory. Receipts a carrier writes
// itself are not counted: those always go home.
const maxCollected = 16 << 20

// receiptCost is what a receipt file of size bytes counts for: at least a
// disk block.
func receiptCost(size int64) int64 { return max(size, 4<<10) }

// collectedFrom is the cost of the receipts held that were delivered to
// dest (the receipts this carrier wrote there count too).
func (b *Buffer) collectedFrom(dest string) int64 {
	var n int64
	sources, _ := os.ReadDir(filepath.Join(b.Dir(), receiptsDir))
	for _, sd := range sources {
		files, _ := os.ReadDir(filepath.Join(b.Dir(), receiptsDir, sd.Name(), dest))
		for _, f := range files {
			if fi, err := f.Info(); err == nil {
				n += receiptCost(fi.Size())
			}
		}
	}
	return n
}

// copyReceipt reads the receipt at p on the host (from source to the
// host) and keeps it in the buffer.
func (c *Carrier) copyReceipt(s *Session, source, p string, fi fs.FileInfo) error {
	if fi.Size() > maxReceiptBytes {
		return fmt.Errorf("%d bytes: too big for a receipt", fi.Size())
	}
	f, err := s.sftp.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxReceiptBytes+1))
	if err != nil {
		return err
	}
	if len(data) > maxReceiptBytes {
		return fmt.Errorf("more than %d bytes: too big for a receipt", maxReceiptBytes)
	}
	rc, err := protocol.ParseReceipt(data)
	if err != nil {
		return err
	}
	if rc.Source != source || rc.Dest != s.Host.Name {
		return fmt.Errorf("%w: names %s to %s, found in %s's inbox from %s", protocol.ErrBadReceipt, rc.Source, rc.Dest, s.Host.Name, source)
	}
	return c.buf.saveReceipt(rc, path.Base(p), data)
}

// receiptAndRelease makes the receipts of the entries delivered by a
// dropoff (receiptDelivered), then releases the entries, unless their
// receipts could not be kept in the buffer.
func (c *Carrier) receiptAndRelease(ctx context.Context, s *Session, delivered []Entry, r *HostReport) {
	if len(delivered) == 0 {
		return
	}
	saved, err := c.receiptDelivered(ctx, s, delivered)
	if err != nil {
		r.Waiting = append(r.Waiting, FileNote{protocol.Inbox + "/" + protocol.ReceiptsDirName, "receipt not written: " + err.Error()})
		c.log.Warn("receipt not written", "host", s.Host.Name, "err", err)
	}
	if !saved {
		return // kept: the next visit finds them delivered and receipts them
	}
	for i, e := range delivered {
		c.buf.Release(e)
		if (i+1)%releaseChunk == 0 {
			// Each queued release holds a copy of its entry until
			// applied: a chunk at a time bounds them (the caller's
			// Flush reports a failure).
			c.buf.Flush()
			c.buf.DropIndexPages() // the releases touched them
		}
	}
}

// releaseChunk is how many releases a dropoff queues before it waits for
// them to be applied.
const releaseChunk = 4096

// maxReceiptListing bounds the replies of one listing of receipts, so a
// hostile host's endless directory costs bounded memory.
const maxReceiptListing = 16 << 20

// listBounded lists dir on the host within maxReceiptListing bytes of
// replies.
func listBounded(ctx context.Context, s *Session, dir string) ([]fs.FileInfo, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.rx.arm(maxReceiptListing, cancel)
	ents, err := s.sftp.ReadDirContext(lctx, dir)
	if s.rx.disarm() < 0 {
		return nil, fmt.Errorf("host %s: list %s: more than %d bytes of entries", s.Host.Name, dir, maxReceiptListing)
	}
	return ents, err
}
