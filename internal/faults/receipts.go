package faults

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/messor-sync/messor/protocol"
)

// The on-host names of receipts and keep mode, spelled out here rather than
// taken from package protocol, so that the checker reads what a host holds
// as a user would and does not share a parser with the code it checks.
const (
	keepMarker  = ".messor-keep"     // in messor/outbox/ or messor/outbox/<dest>/
	sentDir     = "messor/sent"      // the source's ledgers, <dest>.log
	receiptsDir = ".messor-receipts" // in messor/inbox/: <source>/<name>.receipt
	leasePrefix = protocol.ReservedPrefix + ".lease"
	receiptHead = "messor-receipt 1"
)

// Delivered is one line of a ledger or a receipt: a file said delivered.
type Delivered struct {
	Source, Dest, Path string
	Size               int64
	Hash               string // sha256, lowercase hex
	Carrier            string
	Where              string // the file and line it was read from
}

// KeepMode reports whether source's outbox for dest is in keep mode (an
// outbox-wide or per-destination marker is there).
func (w *World) KeepMode(source, dest string) bool {
	out := filepath.Join(w.Dirs[source], filepath.FromSlash(protocol.Outbox))
	for _, p := range []string{filepath.Join(out, keepMarker), filepath.Join(out, dest, keepMarker)} {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// Ledger reads source's ledgers: every line of messor/sent/<dest>.log. A
// torn line (no newline at its end) or one that does not read is an error.
func (w *World) Ledger(source string) ([]Delivered, []error) {
	dir := filepath.Join(w.Dirs[source], filepath.FromSlash(sentDir))
	ents, _ := os.ReadDir(dir)
	var out []Delivered
	var errs []error
	for _, de := range ents {
		dest, ok := strings.CutSuffix(de.Name(), ".log")
		if !ok || !de.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, de.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lines := strings.SplitAfter(string(b), "\n")
		for i, line := range lines {
			if line == "" {
				continue
			}
			where := fmt.Sprintf("%s line %d", p, i+1)
			if !strings.HasSuffix(line, "\n") {
				errs = append(errs, fmt.Errorf("%s: torn ledger line %q", where, line))
				continue
			}
			// <at> <size> <sha256> <carrier> <path>
			f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 5)
			d, err := delivered(f, 1, 2, 3, 4)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q: %w", where, line, err))
				continue
			}
			d.Source, d.Dest, d.Where = source, dest, where
			out = append(out, d)
		}
	}
	return out, errs
}

// delivered reads a size, hash, carrier and path from fields f.
func delivered(f []string, size, hash, carrier, path int) (Delivered, error) {
	if len(f) <= path {
		return Delivered{}, fmt.Errorf("%d fields", len(f))
	}
	n, err := strconv.ParseInt(f[size], 10, 64)
	if err != nil || n < 0 {
		return Delivered{}, fmt.Errorf("size %q", f[size])
	}
	if len(f[hash]) != 64 || strings.Trim(f[hash], "0123456789abcdef") != "" {
		return Delivered{}, fmt.Errorf("hash %q", f[hash])
	}
	if _, err := protocol.CleanRelPath(f[path]); err != nil {
		return Delivered{}, fmt.Errorf("path: %w", err)
	}
	return Delivered{Size: n, Hash: f[hash], Carrier: f[carrier], Path: f[path]}, nil
}

// readReceipt reads a receipt file: its head, source and dest lines, and a
// line per delivered file, <at> <size> <mtime> <sha256> <carrier> <path>.
func readReceipt(p string) ([]Delivered, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 || lines[0] != receiptHead || lines[len(lines)-1] != "" {
		return nil, fmt.Errorf("%s: not a whole receipt: %q", p, b)
	}
	source, ok1 := strings.CutPrefix(lines[1], "source ")
	dest, ok2 := strings.CutPrefix(lines[2], "dest ")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%s: no source and dest: %q", p, b)
	}
	var out []Delivered
	for i, line := range lines[3 : len(lines)-1] {
		d, err := delivered(strings.SplitN(line, " ", 6), 1, 3, 4, 5)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %q: %w", p, i+4, line, err)
		}
		d.Source, d.Dest, d.Where = source, dest, fmt.Sprintf("%s line %d", p, i+4)
		out = append(out, d)
	}
	return out, nil
}

// receiptFiles lists the finished receipt files under root, named
// <time>.<carrier>.<hash>.receipt (a partial on a host, .messor.part.*,
// or a buffer's <name>.tmp, is not one yet).
func receiptFiles(root string) []string {
	var out []string
	for _, rel := range regularFilesNoT(root) {
		if b := filepath.Base(rel); !strings.HasPrefix(b, protocol.ReservedPrefix) && strings.HasSuffix(b, ".receipt") {
			out = append(out, filepath.Join(root, rel))
		}
	}
	return out
}

// receipts reads every receipt the world holds: on the destinations, beside
// their inboxes, and in every carrier's buffer.
func (w *World) receipts() ([]Delivered, []error) {
	var roots []string
	for _, dir := range w.Dirs {
		roots = append(roots, filepath.Join(dir, filepath.FromSlash(protocol.Inbox), receiptsDir))
	}
	for _, buf := range w.buffers() {
		roots = append(roots, filepath.Join(buf, "receipts"))
	}
	var out []Delivered
	var errs []error
	for _, root := range roots {
		for _, p := range receiptFiles(root) {
			ds, err := readReceipt(p)
			if err != nil {
				errs = append(errs, err)
			}
			out = append(out, ds...)
		}
	}
	return out, errs
}

// deliveredAs reports whether dest's inbox from source holds content with
// hash (and size) at p, or at one of p's conflict names.
func (w *World) deliveredAs(d Delivered) bool {
	dir := filepath.Join(w.Dirs[d.Dest], filepath.FromSlash(protocol.InboxDir(d.Source)))
	for n := 1; n < 10; n++ {
		name := d.Path
		if n > 1 {
			name = filepath.ToSlash(filepath.Join(filepath.Dir(d.Path), protocol.ConflictName(filepath.Base(d.Path), n)))
		}
		sum, size, err := fileHash(filepath.Join(dir, filepath.FromSlash(name)))
		if err == nil && size == d.Size && fmt.Sprintf("%x", sum) == d.Hash {
			return true
		}
	}
	return false
}

// checkReceipts asserts the rules of receipts and keep mode that hold at
// every instant:
//   - no ledger line and no receipt (on a destination or in a buffer) names
//     a file that is not in its destination's inbox with that content;
//   - in keep mode a file sent leaves its outbox (is not there with the
//     content sent) only once its source's ledger names that content;
//   - no inbox holds a conflict copy ("name (2)") of identical content.
func (w *World) checkReceipts(fail func(string, ...any)) {
	ledgers := map[string][]Delivered{}
	for source := range w.Dirs {
		ds, errs := w.Ledger(source)
		for _, err := range errs {
			fail("ledger: %v", err)
		}
		ledgers[source] = ds
		for _, d := range ds {
			if !w.deliveredAs(d) {
				fail("LEDGER NAMES AN UNDELIVERED FILE: %s says %s->%s:%s (sha256 %s) was delivered", d.Where, d.Source, d.Dest, d.Path, d.Hash)
			}
		}
	}
	rs, errs := w.receipts()
	for _, err := range errs {
		fail("receipt: %v", err)
	}
	for _, d := range rs {
		if !w.deliveredAs(d) {
			fail("RECEIPT NAMES AN UNDELIVERED FILE: %s says %s->%s:%s (sha256 %s) was delivered", d.Where, d.Source, d.Dest, d.Path, d.Hash)
		}
	}
	for _, k := range w.keys() {
		if !w.KeepMode(k.Source, k.Dest) {
			continue
		}
		want := sha256.Sum256(w.Sent[k])
		if sum, _, err := fileHash(w.outboxPath(k)); err == nil && sum == want {
			continue
		}
		if !named(ledgers[k.Source], k, fmt.Sprintf("%x", want)) {
			fail("KEEP MODE: %s left its outbox but no ledger line names its content", k)
		}
	}
	w.checkNoDuplicates(fail)
}

func named(ds []Delivered, k Key, hash string) bool {
	for _, d := range ds {
		if d.Dest == k.Dest && d.Path == k.Path && d.Hash == hash {
			return true
		}
	}
	return false
}

// checkNoDuplicates fails for every inbox file that is a conflict copy
// (its name is ConflictName of another file there) with the same content.
func (w *World) checkNoDuplicates(fail func(string, ...any)) {
	for dest, dir := range w.Dirs {
		root := filepath.Join(dir, filepath.FromSlash(protocol.Inbox))
		for _, rel := range regularFilesNoT(root) {
			orig, ok := conflictOf(filepath.Base(rel))
			if !ok {
				continue
			}
			a, err1 := os.ReadFile(filepath.Join(root, rel))
			b, err2 := os.ReadFile(filepath.Join(root, filepath.Dir(rel), orig))
			if err1 == nil && err2 == nil && bytes.Equal(a, b) {
				fail("DUPLICATE in the inbox of %s: %s is a second copy of %s", dest, filepath.ToSlash(rel), orig)
			}
		}
	}
}

func (w *World) keys() []Key {
	keys := make([]Key, 0, len(w.Sent))
	for k := range w.Sent {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// CheckHome asserts, once the dust settled, that every receipt came home:
// each file sent is named, with its content, by one line of its source's
// ledger (a second line for the same path and content is a duplicate the
// ledger promises not to hold), and no lease or claim is left in an outbox.
func (w *World) CheckHome(t testing.TB) {
	t.Helper()
	ledgers := map[string][]Delivered{}
	for source, dir := range w.Dirs {
		ds, errs := w.Ledger(source)
		for _, err := range errs {
			t.Errorf("ledger: %v", err)
		}
		ledgers[source] = ds
		seen := map[string]string{}
		for _, d := range ds {
			key := d.Dest + "\x00" + d.Path + "\x00" + d.Hash
			if first, dup := seen[key]; dup {
				t.Errorf("ledger of %s holds %s->%s:%s twice (%s and %s)", source, d.Source, d.Dest, d.Path, first, d.Where)
			}
			seen[key] = d.Where
		}
		for _, rel := range regularFilesNoT(filepath.Join(dir, filepath.FromSlash(protocol.Outbox))) {
			if b := filepath.Base(rel); strings.HasPrefix(b, leasePrefix) || strings.HasPrefix(b, protocol.ClaimPrefix) {
				t.Errorf("outbox of %s still holds %s", source, filepath.ToSlash(rel))
			}
		}
	}
	for _, k := range w.keys() {
		for _, v := range w.Old[k] {
			if !named(ledgers[k.Source], k, fmt.Sprintf("%x", sha256.Sum256(v))) {
				t.Errorf("%s: an earlier version was delivered, but no receipt for it came home", k)
			}
		}
		if !named(ledgers[k.Source], k, fmt.Sprintf("%x", sha256.Sum256(w.Sent[k]))) {
			t.Errorf("%s: delivered, but no receipt came home (no ledger line names it)", k)
		}
	}
}
