package faults

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

// Key names one file put into an outbox: Source's messor/outbox/<Dest>/<Path>.
type Key struct {
	Source, Dest, Path string
}

func (k Key) String() string { return k.Source + "->" + k.Dest + ":" + k.Path }

// World is what the checker knows: where each host keeps its files, where
// the carrier's buffer is, and what was sent.
type World struct {
	Dirs   map[string]string // host name -> SFTP login directory
	Buffer string            // the carrier's buffer directory
	// Others are the buffers of further carriers visiting the same hosts
	// (a lost carrier's is taken out when it is deleted).
	Others []string
	Sent   map[Key][]byte // every file put into an outbox, with its content
	// Stuck lists files whose outbox copy cannot be removed (they are
	// carried and delivered, but stay in the outbox too).
	Stuck map[Key]bool
	// Old holds earlier versions of files, each carried before its
	// source's user saved a new one over it (Replace): every version must
	// arrive, a later one under a conflict name beside the first.
	Old map[Key][][]byte
}

// NewWorld returns an empty world.
func NewWorld(dirs map[string]string, buffer string) *World {
	return &World{Dirs: dirs, Buffer: buffer, Sent: map[Key][]byte{}, Stuck: map[Key]bool{}, Old: map[Key][][]byte{}}
}

// Replace records that source's user saved content over path in the
// outbox for dest (the caller writes it) after the version sent before
// was carried.
func (w *World) Replace(source, dest, path string, content []byte) {
	k := Key{source, dest, path}
	if old, ok := w.Sent[k]; ok {
		w.Old[k] = append(w.Old[k], old)
	}
	w.Sent[k] = content
}

// Lose takes a lost carrier's buffer out of the world (the caller deletes
// it): what only it held is lost, which the checker then reports.
func (w *World) Lose(buf string) {
	if w.Buffer == buf {
		w.Buffer = ""
	}
	w.Others = slices.DeleteFunc(w.Others, func(b string) bool { return b == buf })
}

// versions is every content sent under k, oldest first.
func (w *World) versions(k Key) [][]byte {
	vs := w.Old[k]
	if b, ok := w.Sent[k]; ok {
		vs = append(vs[:len(vs):len(vs)], b)
	}
	return vs
}

// inboxHolds reports whether got, found in dest's inbox from source at p,
// is a version sent under that name, or a later version of a file that
// has several under a conflict name of it; why says what is wrong if not.
func (w *World) inboxHolds(k Key, got []byte) (ok bool, why string) {
	vs := w.versions(k)
	if dir, base := path.Split(k.Path); len(vs) == 0 {
		if orig, ok := conflictOf(base); ok && len(w.Old[Key{k.Source, k.Dest, dir + orig}]) > 0 {
			vs = w.versions(Key{k.Source, k.Dest, dir + orig})
		}
	}
	for _, v := range vs {
		if bytes.Equal(v, got) {
			return true, ""
		}
	}
	if len(vs) == 0 {
		return false, "which was never sent under that name (a partial, or a second copy?)"
	}
	return false, fmt.Sprintf("under its final name with wrong content (%d bytes, want %d)", len(got), len(vs[len(vs)-1]))
}

// conflictOf returns the name that base is a conflict name of
// (protocol.ConflictName), if it is one.
func conflictOf(base string) (string, bool) {
	for n := 2; n < 10; n++ {
		tag := fmt.Sprintf(" (%d)", n)
		i := strings.LastIndex(base, tag)
		if i < 0 {
			continue
		}
		if orig := base[:i] + base[i+len(tag):]; protocol.ConflictName(orig, n) == base {
			return orig, true
		}
	}
	return "", false
}

// Put records files as sent from source to dest (the caller writes them).
func (w *World) Put(source, dest string, files map[string][]byte) {
	for p, b := range files {
		w.Sent[Key{source, dest, p}] = b
	}
}

func (w *World) outboxPath(k Key) string {
	return filepath.Join(w.Dirs[k.Source], filepath.FromSlash(protocol.OutboxDir(k.Dest)), filepath.FromSlash(k.Path))
}

func (w *World) inboxPath(k Key) string {
	return filepath.Join(w.Dirs[k.Dest], filepath.FromSlash(protocol.InboxDir(k.Source)), filepath.FromSlash(k.Path))
}

// Snapshot is what the checker found.
type Snapshot struct {
	Entries  []carrier.Entry
	Objects  int // object files on disk
	Partials int // partial downloads in the buffer
	// InboxPartials counts hidden .messor.part.* files in inboxes.
	InboxPartials int
}

// Check asserts the invariant that must hold at every instant. buf is the
// carrier's open buffer, or nil to open it read-only (the carrier must not be
// running then). It returns what it saw.
func (w *World) Check(t testing.TB, buf *carrier.Buffer) Snapshot {
	t.Helper()
	var open []*carrier.Buffer
	if buf != nil {
		open = append(open, buf)
	}
	return w.CheckOpen(t, open...)
}

// CheckOpen is Check for a world of several carriers: open are the buffers
// held open by carriers running in this process; every other buffer of the
// world is opened read-only. The snapshot counts all buffers together.
func (w *World) CheckOpen(t testing.TB, open ...*carrier.Buffer) Snapshot {
	t.Helper()
	var snap Snapshot
	errs := w.check(open, &snap)
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return snap
}

// CheckSettled asserts Check and, in addition, that the work is done: every
// inbox holds exactly what was sent, no partial anywhere, outboxes hold only
// the Stuck files, and the buffer is empty.
func (w *World) CheckSettled(t testing.TB, buf *carrier.Buffer) {
	t.Helper()
	var open []*carrier.Buffer
	if buf != nil {
		open = append(open, buf)
	}
	w.CheckSettledOpen(t, open...)
}

// CheckSettledOpen is CheckSettled for a world of several carriers (see
// CheckOpen): every buffer must be empty.
func (w *World) CheckSettledOpen(t testing.TB, open ...*carrier.Buffer) {
	t.Helper()
	snap := w.CheckOpen(t, open...)
	for _, e := range snap.Entries {
		t.Errorf("buffer still carries %s->%s:%s", e.Source, e.Dest, e.Path)
	}
	if snap.Objects+snap.Partials != 0 {
		t.Errorf("buffer still holds %d objects and %d partials", snap.Objects, snap.Partials)
	}
	if snap.InboxPartials != 0 {
		t.Errorf("inboxes still hold %d partial uploads", snap.InboxPartials)
	}
	for k, want := range w.Sent {
		got, err := os.ReadFile(w.inboxPath(k))
		if len(w.Old[k]) > 0 {
			for _, v := range w.versions(k) {
				if d := (Delivered{Source: k.Source, Dest: k.Dest, Path: k.Path, Size: int64(len(v)), Hash: fmt.Sprintf("%x", sha256.Sum256(v))}); !w.deliveredAs(d) {
					t.Errorf("%s: version sha256 %s not delivered intact, under its name or a conflict name", k, d.Hash[:16])
				}
			}
		} else if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: not delivered intact (%v)", k, err)
		}
		if _, err := os.Lstat(w.outboxPath(k)); err == nil && !w.Stuck[k] {
			t.Errorf("%s: still in the outbox", k)
		}
	}
	for host, dir := range w.Dirs {
		for _, f := range regularFiles(t, filepath.Join(dir, filepath.FromSlash(protocol.Outbox))) {
			rel := filepath.ToSlash(f)
			if filepath.Base(f) == keepMarker {
				continue
			}
			dest, p, _ := strings.Cut(rel, "/")
			if k := (Key{host, dest, p}); !w.Stuck[k] {
				if _, sent := w.Sent[k]; !sent {
					t.Errorf("%s: outbox holds %s, which was never sent", host, rel)
				}
			}
		}
	}
}

func regularFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	sort.Strings(out)
	return out
}

func fileHash(p string) ([32]byte, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

func (w *World) check(open []*carrier.Buffer, snap *Snapshot) []error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	// The buffers: committed entries whose object is intact.
	inBuffer := map[Key]map[[32]byte]bool{}
	for _, dir := range w.buffers() {
		if err := w.checkBuffer(dir, open, inBuffer, snap, fail); err != nil {
			return []error{err}
		}
	}

	// Inboxes: only finished, verified files under final names.
	for dest, dir := range w.Dirs {
		root := filepath.Join(dir, filepath.FromSlash(protocol.Inbox))
		for _, rel := range regularFilesNoT(root) {
			rel = filepath.ToSlash(rel)
			source, p, _ := strings.Cut(rel, "/")
			if strings.HasPrefix(source, protocol.ReservedPrefix) {
				continue // receipts (checkReceipts), never a source
			}
			base := p[strings.LastIndex(p, "/")+1:]
			if strings.HasPrefix(base, protocol.ReservedPrefix+".part.") {
				snap.InboxPartials++
				continue
			}
			got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
			if err != nil {
				fail("inbox of %s: %v", dest, err)
				continue
			}
			if ok, why := w.inboxHolds(Key{source, dest, p}, got); !ok {
				fail("inbox of %s holds %s from %s %s", dest, p, source, why)
			}
		}
	}

	// Every file sent is intact somewhere.
	keys := make([]Key, 0, len(w.Sent))
	for k := range w.Sent {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		want := sha256.Sum256(w.Sent[k])
		if inBuffer[k][want] {
			continue
		}
		if sum, _, err := fileHash(w.inboxPath(k)); err == nil && sum == want {
			continue
		}
		if d := (Delivered{Source: k.Source, Dest: k.Dest, Path: k.Path, Size: int64(len(w.Sent[k])), Hash: fmt.Sprintf("%x", want)}); len(w.Old[k]) > 0 && w.deliveredAs(d) {
			continue // a later version, under a conflict name
		}
		if sum, _, err := fileHash(w.outboxPath(k)); err == nil && sum == want {
			continue
		}
		fail("LOST: %s is intact in none of outbox, buffer, inbox", k)
	}
	for k, olds := range w.Old {
		for _, v := range olds {
			sum := sha256.Sum256(v)
			d := Delivered{Source: k.Source, Dest: k.Dest, Path: k.Path, Size: int64(len(v)), Hash: fmt.Sprintf("%x", sum)}
			if !inBuffer[k][sum] && !w.deliveredAs(d) {
				fail("LOST: %s, the version sha256 %x replaced since, is intact in neither buffer nor inbox", k, sum[:8])
			}
		}
	}
	w.checkReceipts(fail)
	return errs
}

// buffers are the buffer directories of the world's carriers.
func (w *World) buffers() []string {
	if w.Buffer == "" {
		return w.Others
	}
	return append([]string{w.Buffer}, w.Others...)
}

// checkBuffer checks the buffer in dir (one of open, or opened read-only)
// and adds what it carries intact to inBuffer and snap.
func (w *World) checkBuffer(dir string, open []*carrier.Buffer, inBuffer map[Key]map[[32]byte]bool, snap *Snapshot, fail func(string, ...any)) error {
	var buf *carrier.Buffer
	for _, b := range open {
		if b.Dir() == dir {
			buf = b
		}
	}
	if buf == nil {
		b, err := carrier.OpenBufferReadOnly(dir)
		if err != nil {
			return fmt.Errorf("open buffer: %w", err)
		}
		defer b.Close()
		buf = b
	}
	st, err := carrier.ReadStatus(buf)
	if err != nil {
		return fmt.Errorf("buffer %s: status: %w", dir, err)
	}
	snap.Entries = append(snap.Entries, st.Items...)
	intact := map[string]bool{} // object hash -> verified
	for _, e := range st.Items {
		k := Key{e.Source, e.Dest, e.Path}
		ok, seen := intact[e.Hash]
		if !seen {
			sum, n, err := fileHash(buf.ObjectPath(e.Hash))
			ok = err == nil && n == e.Size && fmt.Sprintf("%x", sum) == e.Hash
			intact[e.Hash] = ok
		}
		if !ok {
			fail("buffer: object for %s (sha256 %s) is missing or damaged", k, e.Hash)
			continue
		}
		vs := w.versions(k)
		if len(vs) == 0 {
			fail("buffer carries %s, which was never sent", k)
			continue
		}
		i := slices.IndexFunc(vs, func(v []byte) bool { return fmt.Sprintf("%x", sha256.Sum256(v)) == e.Hash })
		if i < 0 {
			fail("buffer carries a torn or stale copy of %s (sha256 %s)", k, e.Hash)
			continue
		}
		if inBuffer[k] == nil {
			inBuffer[k] = map[[32]byte]bool{}
		}
		inBuffer[k][sha256.Sum256(vs[i])] = true
	}
	snap.Objects += len(regularFilesNoT(filepath.Join(dir, "objects")))
	snap.Partials += len(regularFilesNoT(filepath.Join(dir, "partial")))
	return nil
}

func regularFilesNoT(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}
