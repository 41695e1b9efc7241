package carrier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/messor-sync/messor/protocol"
)

// Keep mode (protocol/doc.go, "Receipts and keep mode"): an outbox marked
// with protocol.KeepMarker keeps each carried file until a receipt for its
// exact version comes back; meanwhile a lease beside it keeps other
// carriers from carrying it again. The leases this carrier wrote are also
// noted in its buffer (leases/<source>/<hash of dest and path>), for
// status.

// DefaultLease is Options.Lease's default.
const DefaultLease = 7 * 24 * time.Hour

const leasesDir = "leases"

// maxLeaseBytes bounds a lease file read from a host.
const maxLeaseBytes = 4 << 10

// leaseReaders is how many leases are read at once.
const leaseReaders = 16

// ownTop notes messor's own entries at the top of messor/outbox/: the
// keep marker for every destination. It reports whether name was one.
func (l *listing) ownTop(name string, mode fs.FileMode) bool {
	if name != protocol.KeepMarker {
		return false
	}
	l.keepAll = l.keepAll || mode.IsRegular()
	return true
}

// own notes messor's own entries in outbox/<dest>/<rel>: a keep marker
// (at rel "") and leases. It reports whether name was one of them.
func (l *listing) own(dest, rel, name string, mode fs.FileMode) bool {
	switch {
	case rel == "" && name == protocol.KeepMarker:
		if mode.IsRegular() {
			if l.keep == nil {
				l.keep = map[string]bool{}
			}
			l.keep[dest] = true
		}
		return true
	case len(name) > len(protocol.LeasePrefix) && name[:len(protocol.LeasePrefix)] == protocol.LeasePrefix:
		if mode.IsRegular() {
			if l.leases == nil {
				l.leases = map[string]bool{}
			}
			l.leases[path.Join(protocol.OutboxDir(dest), rel, name)] = true
		}
		return true
	}
	return false
}

// keepAny reports whether any of the listed outbox is in keep mode: what
// it carries stays, so listing again finds the same.
func (l *listing) keepAny() bool { return l.keepAll || len(l.keep) > 0 }

// markKeep marks the candidates whose outbox is in keep mode, and those
// beside a lease.
func (l *listing) markKeep() {
	for i, cd := range l.cands {
		l.cands[i].Keep = l.keepAll || l.keep[cd.Dest]
		l.cands[i].Leased = l.leases[leasePath(path.Join(protocol.OutboxDir(cd.Dest), cd.Path))]
	}
}

// markClaimsKeep marks the claims met in an outbox in keep mode.
func (l *listing) markClaimsKeep() {
	for i := range l.claims {
		l.claims[i].Keep = l.keepAll || l.keep[l.claims[i].Dest]
	}
}

// leasePath is the lease beside the outbox file remote.
func leasePath(remote string) string {
	dir, base := path.Split(remote)
	name, err := protocol.LeaseName(base)
	if err != nil {
		return ""
	}
	return dir + name
}

// unleased leaves out of l's candidates those in keep mode under a live
// lease for their version (by any carrier, this one included): carried,
// and waiting for a receipt or for the lease to end.
func (c *Carrier) unleased(ctx context.Context, s *Session, l *listing, notes *noteSet) []candidate {
	now := c.opts.Now()
	out := make([]candidate, len(l.cands))
	var wg sync.WaitGroup
	sem := make(chan struct{}, leaseReaders)
	for i, cd := range l.cands {
		out[i] = cd
		remote := path.Join(protocol.OutboxDir(cd.Dest), cd.Path)
		if !cd.Keep || !l.leases[leasePath(remote)] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			le, ok := c.readLease(s, remote)
			if ok && le.Size == cd.Size && le.MTime.Unix() == cd.MTime.Unix() && now.Before(le.Expires) {
				out[i].Dest = "" // leased: left out below
				notes.wait(path.Join(cd.Dest, cd.Path), "kept until a receipt comes back (leased by carrier "+le.Carrier+" until "+le.Expires.Format(time.RFC3339)+")")
				return
			}
			if !ok {
				// Gone with its lease since the listing (a receipt
				// handed over on this visit removed both): nothing to
				// carry, nothing changed.
				if _, err := s.sftp.Lstat(remote); errors.Is(err, fs.ErrNotExist) {
					out[i].Dest = ""
				}
			}
		}()
	}
	wg.Wait()
	kept := out[:0]
	for _, cd := range out {
		if cd.Dest != "" {
			kept = append(kept, cd)
		}
	}
	return kept
}

// readLease reads the lease beside the outbox file remote; ok is false
// when there is none, or it is not a lease (garbage counts as none).
func (c *Carrier) readLease(s *Session, remote string) (protocol.Lease, bool) {
	p := leasePath(remote)
	if p == "" {
		return protocol.Lease{}, false
	}
	f, err := s.sftp.Open(p)
	if err != nil {
		return protocol.Lease{}, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxLeaseBytes))
	if err != nil {
		return protocol.Lease{}, false
	}
	l, err := protocol.ParseLease(data)
	if err != nil {
		c.log.Debug("not a lease; taken for none", "host", s.Host.Name, "path", p, "err", err)
	}
	return l, err == nil
}

// keep leaves a committed keep-mode file in the outbox and leases it to
// this carrier for Options.Lease. A lease that cannot be written only lets
// another carrier carry the file again (the destination takes identical
// content once). What stands under the lease's name (an expired lease, or
// a symlink) is removed, and the lease made new (exclusive create, which
// never follows a symlink), so it is never written into another file.
func (c *Carrier) keep(s *Session, cd candidate, remote, sum string) {
	le := protocol.Lease{Carrier: c.claimID(), Expires: c.opts.Now().Add(c.opts.Lease),
		Size: cd.Size, MTime: cd.MTime, Hash: sum}
	data := protocol.FormatLease(le)
	p := leasePath(remote)
	s.sftp.Remove(p)
	f, err := s.sftp.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err == nil {
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		c.log.Warn("carried, cannot write its lease", "host", s.Host.Name, "path", p, "err", err)
		return
	}
	c.buf.noteLease(s.Host.Name, cd.Dest, cd.Path, data)
}

// dropLease removes the lease of an outbox file a receipt removed, unless
// a new version stands under its name (whose lease it is not: it is
// ignored for that version, and replaced when it is carried). It fails
// when the lease may still be there, so the receipt is kept for the next
// visit to try again.
func (c *Carrier) dropLease(s *Session, dest, p, remote string) error {
	if _, err := s.sftp.Lstat(remote); err == nil {
		c.buf.forgetLease(s.Host.Name, dest, p)
		return nil
	}
	if lp := leasePath(remote); lp != "" {
		if err := s.sftp.Remove(lp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("host %s: remove %s: %w", s.Host.Name, lp, err)
		}
	}
	c.buf.forgetLease(s.Host.Name, dest, p)
	return nil
}

func (b *Buffer) leaseNote(source, dest, p string) string {
	h := sha256.Sum256([]byte(dest + "\x00" + p))
	return filepath.Join(b.Dir(), leasesDir, source, hex.EncodeToString(h[:16]))
}

// noteLease remembers a lease this carrier wrote (for status only: not
// synced).
func (b *Buffer) noteLease(source, dest, p string, lease []byte) {
	n := b.leaseNote(source, dest, p)
	if err := os.MkdirAll(filepath.Dir(n), 0o700); err == nil {
		os.WriteFile(n, lease, 0o600)
	}
}

func (b *Buffer) forgetLease(source, dest, p string) { os.Remove(b.leaseNote(source, dest, p)) }

// liveLeases counts, by source host, the leases this carrier noted that
// have not expired at now.
func (b *Buffer) liveLeases(now time.Time) map[string]int {
	out := map[string]int{}
	hosts, _ := os.ReadDir(filepath.Join(b.Dir(), leasesDir))
	for _, h := range hosts {
		files, _ := os.ReadDir(filepath.Join(b.Dir(), leasesDir, h.Name()))
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(b.Dir(), leasesDir, h.Name(), f.Name()))
			if err != nil {
				continue
			}
			if l, err := protocol.ParseLease(data); err == nil && now.Before(l.Expires) {
				out[h.Name()]++
			}
		}
	}
	return out
}

func sortHostReceipts(hs []HostReceipts) {
	sort.Slice(hs, func(i, j int) bool { return hs[i].Host < hs[j].Host })
}
