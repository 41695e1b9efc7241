package carrier

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/messor-sync/messor/internal/durable"
	"github.com/messor-sync/messor/protocol"
)

// Receipts (protocol/doc.go, "Receipts and keep mode") live in the buffer
// as copies of the receipt files found on, or written to, destinations:
//
//	receipts/<source>/<dest>/<receipt name>       to be handed to <source>
//	receipts-home/<dest>/<source>/<receipt name>  handed over: to be removed from <dest>
//
// A receipt leaves receipts/ once its source's ledger holds its lines; the
// marker in receipts-home/ lets the next visit to its destination remove
// the destination's copy. Both go after Options.ReceiptMaxAge.
const (
	receiptsDir = "receipts"
	homeDir     = "receipts-home"
)

// DefaultReceiptMaxAge is Options.ReceiptMaxAge's default.
const DefaultReceiptMaxAge = 30 * 24 * time.Hour

// maxReceiptBytes bounds a receipt file read from a host (about 60,000
// files of one dropoff).
const maxReceiptBytes = 8 << 20

// heldReceipt is a receipt file held in the buffer.
type heldReceipt struct {
	file string // its path in the buffer
	name string // its file name (as on the destination)
	r    protocol.Receipt
}

func (b *Buffer) receiptPath(source, dest, name string) string {
	return filepath.Join(b.Dir(), receiptsDir, source, dest, name)
}

func (b *Buffer) homePath(dest, source, name string) string {
	return filepath.Join(b.Dir(), homeDir, dest, source, name)
}

// saveReceipt keeps a receipt (content, named name) durably in the buffer.
func (b *Buffer) saveReceipt(r protocol.Receipt, name string, content []byte) error {
	p := b.receiptPath(r.Source, r.Dest, name)
	if err := mkdirSynced(b.Dir(), filepath.Dir(p)); err != nil {
		return fmt.Errorf("buffer %s: %w", b.Dir(), err)
	}
	if err := durable.WriteFile(p, content); err != nil {
		return fmt.Errorf("buffer %s: receipt %s: %w", b.Dir(), name, err)
	}
	return nil
}

// mkdirSynced makes dir (below top) and syncs the parent of each directory
// it made, so the receipts written there survive a crash.
func mkdirSynced(top, dir string) error {
	if _, err := os.Stat(dir); err == nil || dir == top || !strings.HasPrefix(dir, top) {
		return nil
	}
	if err := mkdirSynced(top, filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return durable.SyncDir(filepath.Dir(dir))
}

// hasReceipt reports whether the buffer holds, or has handed over, the
// receipt name from source found on dest.
func (b *Buffer) hasReceipt(source, dest, name string) (held, home bool) {
	_, err := os.Lstat(b.receiptPath(source, dest, name))
	_, herr := os.Lstat(b.homePath(dest, source, name))
	return err == nil, herr == nil
}

// receiptsFor reads the receipts held for source. A file that does not
// parse, or whose source or destination is not the one its place names,
// is left where it is and passed over (logged).
func (b *Buffer) receiptsFor(source string) []heldReceipt {
	var out []heldReceipt
	top := filepath.Join(b.Dir(), receiptsDir, source)
	dests, _ := os.ReadDir(top)
	for _, d := range dests {
		files, _ := os.ReadDir(filepath.Join(top, d.Name()))
		for _, f := range files {
			if _, _, err := protocol.ParseReceiptName(f.Name()); err != nil {
				continue // a .tmp of a write cut short
			}
			p := filepath.Join(top, d.Name(), f.Name())
			data, err := os.ReadFile(p)
			var r protocol.Receipt
			if err == nil {
				r, err = protocol.ParseReceipt(data)
			}
			if err == nil && (r.Source != source || r.Dest != d.Name()) {
				err = fmt.Errorf("%w: names %s to %s", protocol.ErrBadReceipt, r.Source, r.Dest)
			}
			if err != nil {
				b.Log("receipt passed over", fmt.Errorf("%s: %w", p, err))
				continue
			}
			out = append(out, heldReceipt{file: p, name: f.Name(), r: r})
		}
	}
	return out
}

// forgetReceipt drops a receipt handed to its source, leaving the marker
// that has the next visit to its destination remove the copy there.
func (b *Buffer) forgetReceipt(h heldReceipt) error {
	mark := b.homePath(h.r.Dest, h.r.Source, h.name)
	if err := mkdirSynced(b.Dir(), filepath.Dir(mark)); err != nil {
		return err
	}
	if err := durable.WriteFile(mark, nil); err != nil {
		return err
	}
	if err := os.Remove(h.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return durable.SyncDir(filepath.Dir(h.file))
}

// dropHomeMark forgets that a receipt was handed over, once its
// destination's copy is gone.
func (b *Buffer) dropHomeMark(dest, source, name string) {
	os.Remove(b.homePath(dest, source, name))
}

// expireReceipts removes the receipts and markers kept longer than maxAge
// (by their files' mtimes: when this carrier wrote them, by its own clock,
// as now is, so that a receipt taken from a carrier whose clock is far
// off is kept as long as any other).
func (b *Buffer) expireReceipts(now time.Time, maxAge time.Duration) {
	for _, top := range []string{receiptsDir, homeDir} {
		filepath.WalkDir(filepath.Join(b.Dir(), top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if _, _, err := protocol.ParseReceiptName(d.Name()); err != nil {
				return nil
			}
			if fi, err := d.Info(); err == nil && now.Sub(fi.ModTime()) > maxAge {
				os.Remove(p)
			}
			return nil
		})
	}
}

// HostReceipts is what a buffer holds for one host: receipts to hand over
// to it (counted in delivered files), and leases this carrier holds on it.
type HostReceipts struct {
	Host     string `json:"host"`
	Receipts int    `json:"receipts"`
	Leases   int    `json:"leases"`
}

// receiptStatus counts, per host, the files receipted and waiting to go
// home, and the leases held (live at now).
func (b *Buffer) receiptStatus(now time.Time) []HostReceipts {
	by := map[string]*HostReceipts{}
	get := func(h string) *HostReceipts {
		if by[h] == nil {
			by[h] = &HostReceipts{Host: h}
		}
		return by[h]
	}
	hosts, _ := os.ReadDir(filepath.Join(b.Dir(), receiptsDir))
	for _, h := range hosts {
		if n := countLines(b.receiptsFor(h.Name())); n > 0 {
			get(h.Name()).Receipts += n
		}
	}
	for host, n := range b.liveLeases(now) {
		get(host).Leases += n
	}
	out := make([]HostReceipts, 0, len(by))
	for _, h := range by {
		out = append(out, *h)
	}
	sortHostReceipts(out)
	return out
}

func countLines(hs []heldReceipt) int {
	n := 0
	for _, h := range hs {
		n += len(h.r.Files)
	}
	return n
}
