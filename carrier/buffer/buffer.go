package buffer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/messor-sync/messor/internal/durable"
)

// Entry is one carried file: content Hash, to be delivered to Dest as
// messor/inbox/<Source>/<Path> with the source's MTime and permissions.
type Entry struct {
	Source   string    `json:"source"`
	Dest     string    `json:"dest"`
	Path     string    `json:"path"`
	Hash     string    `json:"sha256"`
	Size     int64     `json:"size"`
	MTime    time.Time `json:"mtime"`
	PickedAt time.Time `json:"picked_at"`
	// Perm holds the source's permission bits (rwx for user, group and
	// others, nothing else) where HasPerm says they were recorded: entries
	// committed by a messor that did not record them have none, and are
	// delivered with defaultPerm.
	Perm    fs.FileMode `json:"perm,omitempty"`
	HasPerm bool        `json:"has_perm,omitempty"`
	// From is the destination the entry was carried for before `messor
	// readdress` (Buffer.Readdress) gave it this one: an index or a
	// recover that finds both entries keeps this one (settleReaddress).
	From string `json:"readdressed_from,omitempty"`
}

// defaultPerm is the mode of a delivered file whose source's mode is not
// known: never wider than the source was, whatever it was, and still the
// owner's to read and change.
const defaultPerm fs.FileMode = 0o600

// DeliverPerm is the mode e's file is delivered with: the source's
// permission bits (never setuid, setgid or sticky), or defaultPerm.
func (e Entry) DeliverPerm() fs.FileMode {
	if !e.HasPerm {
		return defaultPerm
	}
	return e.Perm & fs.ModePerm
}

// Key identifies e in the index: source, destination, path and content
// hash. Two entries with the same Key are the same carried file.
func (e Entry) Key() []byte {
	return []byte(e.Source + "\x00" + e.Dest + "\x00" + e.Path + "\x00" + e.Hash)
}

// Origin identifies one version of one outbox file: the carried record
// of a committed entry is kept under it until the outbox file is gone
// (ForgetCarried), so a later visit never carries it twice.
type Origin struct {
	Source, Dest, Path string
	Size               int64
	MTime              int64 // unix seconds: SFTP v3 carries no more
}

func (o Origin) key() []byte {
	return []byte(o.Source + "\x00" + o.Dest + "\x00" + o.Path + "\x00" +
		strconv.FormatInt(o.Size, 10) + "\x00" + strconv.FormatInt(o.MTime, 10))
}

// PartialName is the file name of the buffer partial for this origin:
// a tag of its source host, so a visit can tell its own stale partials,
// then a hash of the whole origin.
func (o Origin) PartialName() string {
	h := sha256.Sum256(o.key())
	return sourceTag(o.Source) + "-" + hex.EncodeToString(h[:16])
}

func sourceTag(source string) string {
	h := sha256.Sum256([]byte(source))
	return hex.EncodeToString(h[:4])
}

// DropStalePartials removes the partial downloads from source that belong
// to no file in keep (partial names of the files its outbox lists now):
// their source changed or went away, so they can never be resumed. Their
// bytes no longer count against the limit. Call it before fetching from
// source.
func (b *Buffer) DropStalePartials(source string, keep map[string]bool) (n int, freed int64) {
	dir := filepath.Join(b.dir, "partial")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	prefix := sourceTag(source) + "-"
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || keep[name] {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			n++
			freed += info.Size()
		}
	}
	b.mu.Lock()
	b.partials -= freed
	if b.partials < 0 {
		b.partials = 0
	}
	b.mu.Unlock()
	return n, freed
}

type objectRec struct {
	Size int64 `json:"size"`
	Refs int   `json:"refs"`
}

var (
	bucketEntries = []byte("entries") // Entry.key -> storedEntry (record.go)
	bucketObjects = []byte("objects") // hex hash -> objectRec
	bucketCarried = []byte("carried") // Origin.key -> hex hash, until the outbox file is gone
	// Batch record files (record.go): how many live entries each holds,
	// and which name entries no longer live until they are rewritten.
	bucketRecFiles = []byte("recfiles") // record file name -> live entries (decimal)
	bucketRecDirty = []byte("recdirty") // record file name -> nothing

	allBuckets = [][]byte{bucketEntries, bucketObjects, bucketCarried, bucketRecFiles, bucketRecDirty}
)

// ErrBusy is returned by Open when another run holds the buffer.
var ErrBusy = errors.New("buffer is in use by another messor run")

// ErrIndexCorrupt is returned by Open when the index cannot be read.
var ErrIndexCorrupt = errors.New("buffer index is corrupt")

// Buffer is the carrier's local store: content-addressed objects under
// objects/, resumable partial downloads under partial/, and a crash-safe
// index (bbolt, fsynced on every commit) in index.db. The index file's lock
// makes one run at a time per buffer. Methods are safe for concurrent use.
type Buffer struct {
	logger  *slog.Logger
	id      string // random, names this carrier's partial uploads on hosts
	dir     string
	limit   int64
	db      *bolt.DB
	recSeq  uint64     // record files named by this run (commit goroutine only)
	cleaned []string   // record files rewritten, to unmark (commit goroutine only)
	notes   []openNote // what the open found, logged by SetLogger

	ops       chan *op
	kick      chan struct{}
	pmu       sync.Mutex
	pending   []*op // queued without waiting (forget, release)
	quit      chan struct{}
	loopDone  chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	stored   int64 // bytes of committed objects
	partials int64 // bytes of partial files found at open, not yet reserved
	reserved int64 // bytes reserved by downloads in flight
}

// Open opens (creating it if needed) the buffer in dir with the given
// limit in bytes. It fails with ErrBusy when another run has it open,
// and ErrIndexCorrupt when the index is damaged, missing or empty while
// the buffer holds records of carried files. What a crash left between
// storing and indexing is indexed or kept aside, never deleted (check).
func Open(dir string, limit int64) (*Buffer, error) {
	return open(dir, limit, false)
}

// OpenReadOnly opens the buffer for inspection (status). It shares the
// lock with other readers only.
func OpenReadOnly(dir string) (*Buffer, error) {
	return open(dir, 0, true)
}

func open(dir string, limit int64, ro bool) (*Buffer, error) {
	if !ro {
		if err := makeLayout(dir); err != nil {
			return nil, fmt.Errorf("buffer %s: %w", dir, err)
		}
	}
	id, err := bufferID(dir, ro)
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w", dir, err)
	}
	dbPath := filepath.Join(dir, "index.db")
	st, statErr := os.Stat(dbPath)
	// A zero-length index is one whose making was cut (a kill inside the
	// first Open, before bbolt wrote its pages): as good as missing.
	fresh := errors.Is(statErr, fs.ErrNotExist) || statErr == nil && st.Size() == 0
	if fresh {
		// A buffer that carries files but has no index lost it: starting
		// an empty one would leave every carried file unknown.
		if n := countRecordFiles(dir); n > 0 {
			return nil, fmt.Errorf("buffer %s: %w: index.db is missing or empty but the buffer holds records of carried files (%d record files); %s", dir, ErrIndexCorrupt, n, recoverHint)
		}
		if ro {
			return &Buffer{dir: dir, id: id}, nil // empty, never used
		}
	}
	db, err := openIndex(dbPath, ro)
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("buffer %s: %w (wait for it to finish, or stop it)", dir, ErrBusy)
	}
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w: %w; %s", dir, ErrIndexCorrupt, err, recoverHint)
	}
	b := &Buffer{dir: dir, limit: limit, db: db, id: id}
	if err := b.verifyIndex(); err != nil {
		db.Close()
		return nil, fmt.Errorf("buffer %s: %w: %w; %s", dir, ErrIndexCorrupt, err, recoverHint)
	}
	// An index never set up (a crash while it was being made, or a
	// rebuild by an older messor that was cut short) beside records of
	// carried files lost them: the same as a missing one.
	if !fresh && !b.initialized() {
		if n := countRecordFiles(dir); n > 0 {
			db.Close()
			return nil, fmt.Errorf("buffer %s: %w: index.db is empty but the buffer holds records of carried files (%d record files); %s", dir, ErrIndexCorrupt, n, recoverHint)
		}
	}
	if !ro {
		if err := db.Update(createBuckets); err != nil {
			db.Close()
			return nil, fmt.Errorf("buffer %s: %w: %w", dir, ErrIndexCorrupt, err)
		}
		if err := b.check(); err != nil {
			db.Close()
			return nil, err
		}
		b.startCommitter()
	} else if err := b.sumStored(); err != nil {
		db.Close()
		return nil, err
	}
	return b, nil
}

// openIndex opens the bbolt index at p. bbolt panics on some damaged
// pages while it opens; that is reported as an error, and the file it
// opened is closed (releasing its lock).
func openIndex(p string, ro bool) (db *bolt.DB, err error) {
	var f *os.File
	defer func() {
		if r := recover(); r != nil {
			if f != nil { // its mapping stays: memory, not the lock
				unlockFile(f)
				f.Close()
			}
			db, err = nil, fmt.Errorf("index damaged: %v", r)
		}
	}()
	return bolt.Open(p, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond, ReadOnly: ro,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			var err error
			f, err = os.OpenFile(name, flag, perm)
			return f, err
		}})
}

// createBuckets makes the index's buckets that are missing.
func createBuckets(tx *bolt.Tx) error {
	for _, n := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(n); err != nil {
			return err
		}
	}
	return nil
}

// initialized reports whether the index was ever set up (it has its
// buckets).
func (b *Buffer) initialized() bool {
	ok := false
	b.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketEntries) != nil
		return nil
	})
	return ok
}

// countRecordFiles counts the record files in the buffer in dir.
func countRecordFiles(dir string) int {
	recs, _ := (&Buffer{dir: dir}).recordFiles()
	return len(recs)
}

// recoverHint tells people what to do about ErrIndexCorrupt.
const recoverHint = "nothing carried is lost: the index can be rebuilt from the buffer's per-file records: run `messor recover`"

// note keeps something the open found, to be logged when the logger is
// set.
func (b *Buffer) note(msg string, args ...any) {
	b.notes = append(b.notes, openNote{msg, args})
}

type openNote struct {
	msg  string
	args []any
}

// Close closes the index and releases the lock.
func (b *Buffer) Close() error {
	if b.db == nil {
		return nil
	}
	b.closeOnce.Do(func() {
		if b.quit != nil {
			close(b.quit)
			<-b.loopDone
		}
	})
	return b.db.Close()
}

// ID is the buffer's random identity, made when it was created; it keeps
// the partial uploads of different carriers apart on a host.
func (b *Buffer) ID() string { return b.id }

// bufferID reads dir/id, creating it (durably) if missing and !ro.
func bufferID(dir string, ro bool) (string, error) {
	p := filepath.Join(dir, "id")
	if b, err := os.ReadFile(p); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	}
	if ro {
		return "", nil
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := durable.WriteFile(p, []byte(id+"\n")); err != nil {
		return "", err
	}
	return id, durable.SyncDir(dir)
}

// Dir is the buffer's directory.
func (b *Buffer) Dir() string { return b.dir }

// Limit is the buffer's limit in bytes.
func (b *Buffer) Limit() int64 { return b.limit }

// Used is the bytes counted against the limit: committed objects, partial
// files, and reservations of downloads in flight.
func (b *Buffer) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stored + b.partials + b.reserved
}

// Stored is the bytes of committed objects.
func (b *Buffer) Stored() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stored
}

// Reserve claims n bytes of the limit for a download whose partial already
// holds have bytes (counted among partials). It reports false, claiming
// nothing, when that would overshoot the limit.
func (b *Buffer) Reserve(n, have int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stored+max(0, b.partials-have)+b.reserved+n > b.limit {
		return false
	}
	b.partials = max(0, b.partials-have)
	b.reserved += n
	return true
}

// Unreserve gives back a reservation of n bytes; keep bytes stay on disk as
// a partial for a later resume.
func (b *Buffer) Unreserve(n, keep int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved -= n
	b.partials += keep
}

// PartialPath is where the partial download of o is kept until it is
// committed (or found stale by DropStalePartials).
func (b *Buffer) PartialPath(o Origin) string {
	return filepath.Join(b.dir, "partial", o.PartialName())
}

// ObjectPath is where the content with this hex hash is stored.
func (b *Buffer) ObjectPath(hash string) string {
	return filepath.Join(b.dir, "objects", hash[:2], hash)
}

// Carried reports whether this version of an outbox file was committed and
// its outbox copy may still exist.
func (b *Buffer) Carried(origins []Origin) ([]bool, error) {
	out := make([]bool, len(origins))
	err := b.db.View(func(tx *bolt.Tx) error {
		cb, eb := tx.Bucket(bucketCarried), tx.Bucket(bucketEntries)
		for i, o := range origins {
			out[i] = carriedIn(cb, eb, o)
		}
		return nil
	})
	return out, err
}

func carriedIn(cb, eb *bolt.Bucket, o Origin) bool {
	v := cb.Get(o.key())
	if v == nil {
		return false
	}
	if bytes.HasSuffix(v, removalFailed) {
		return true // we could not remove it: carried once, never again
	}
	// Otherwise the record may be stale (its forget lost in a crash):
	// trust it only while we still hold that very version, so that a
	// different file that happens to share path, size and mtime is never
	// removed uncarried.
	prefix := []byte(o.Source + "\x00" + o.Dest + "\x00" + o.Path + "\x00")
	c := eb.Cursor()
	for k, ev := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, ev = c.Next() {
		var e Entry
		if json.Unmarshal(ev, &e) == nil && e.Size == o.Size && e.MTime.Unix() == o.MTime {
			return true
		}
	}
	return false
}

// CarriedPaths calls f with the destination and path of each of source's
// outbox files that has a carried record (whether or not its entry is
// still held).
func (b *Buffer) CarriedPaths(source string, f func(dest, p string)) error {
	prefix := []byte(source + "\x00")
	return b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCarried).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			dest, rest, _ := bytes.Cut(k[len(prefix):], []byte{0})
			p, _, _ := bytes.Cut(rest, []byte{0})
			f(string(dest), string(p))
		}
		return nil
	})
}

// removalFailed marks a carried record whose outbox file could not be
// removed.
var removalFailed = []byte("\x00removal-failed")

// RemoveFailed records that the outbox copy of o could not be removed: it
// is carried once and never again while it stays.
func (b *Buffer) RemoveFailed(o Origin) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bucketCarried)
		v := cb.Get(o.key())
		if v == nil || bytes.HasSuffix(v, removalFailed) {
			return nil
		}
		return cb.Put(o.key(), append(append([]byte(nil), v...), removalFailed...))
	})
}

// ForgetCarried records that the outbox copy of o is gone. It is grouped
// with other index changes; losing it in a crash only leaves a record that
// makes a later visit remove an identical outbox file without carrying it
// twice.
func (b *Buffer) ForgetCarried(o Origin) {
	b.queue(&op{kind: opForget, o: o})
}

// Commit stores the partial file at partial as the object for e.Hash (or
// drops it when that content is stored already), makes it durable, and
// records e and its origin in the index. reserved is the reservation this
// download held. dedup reports that the content was stored already.
// Commits from concurrent callers are grouped: one filesystem sync and one
// index transaction for all of them.
func (b *Buffer) Commit(e Entry, o Origin, partial string, reserved int64) (dedup bool, err error) {
	r := b.do(&op{kind: opCommit, e: e, o: o, partial: partial, reserved: reserved})
	return r.dedup, r.err
}

// CommitData is Commit for content held in memory (a small file): it is
// written straight under its content's name.
func (b *Buffer) CommitData(e Entry, o Origin, data []byte, reserved int64) (dedup bool, err error) {
	r := b.do(&op{kind: opCommit, e: e, o: o, data: data, reserved: reserved})
	return r.dedup, r.err
}

// Release removes a delivered entry, and its object once no entry uses it.
// It is queued, not waited for (Flush does): lost in a crash, the entry is
// simply found delivered already on the next visit.
func (b *Buffer) Release(e Entry) {
	b.queue(&op{kind: opRelease, e: e})
}

// Log reports a problem met in the background (by the buffer, or by the
// carrier with its files in the buffer) where SetLogger said, as a warning
// naming the buffer; nowhere before SetLogger.
func (b *Buffer) Log(msg string, err error) {
	if b.logger != nil {
		b.logger.Warn(msg, "buffer", b.dir, "err", err)
	}
}

// SetLogger sets where the buffer reports background problems, and
// reports there what opening the buffer found and did.
func (b *Buffer) SetLogger(l *slog.Logger) {
	b.logger = l
	for _, n := range b.notes {
		l.Warn(n.msg, append([]any{"buffer", b.dir}, n.args...)...)
	}
	b.notes = nil
}

// Entries lists the carried files, oldest pickup first.
func (b *Buffer) Entries() ([]Entry, error) {
	var out []Entry
	if b.db == nil {
		return nil, nil
	}
	err := b.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEntries)
		if eb == nil {
			return nil
		}
		defer dropMapped(tx)
		return eb.ForEach(func(k, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entry %q: %w: %w", bytes.ReplaceAll(k, []byte{0}, []byte("/")), ErrIndexCorrupt, err)
			}
			out = append(out, e)
			if len(out)%dropEvery == 0 {
				dropMapped(tx)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w", b.dir, err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].PickedAt.Before(out[j].PickedAt) })
	return out, nil
}

// dropEvery is how many entries a scan of the index reads between two
// givings back of the pages it touched (dropMapped).
const dropEvery = 4096

// DropIndexPages gives back the pages of the index's memory map the
// process touched (reads and commits touch them; the index stays as it
// is): for a caller that has just queued and flushed many changes.
func (b *Buffer) DropIndexPages() {
	if b.db == nil {
		return
	}
	_ = b.db.View(func(tx *bolt.Tx) error {
		dropMapped(tx)
		return nil
	})
}

// makeLayout creates the buffer's directories, the 256 object prefix
// directories among them, and makes them durable once, so that a commit
// never depends on a directory entry that was not synced.
func makeLayout(dir string) error {
	objects := filepath.Join(dir, "objects")
	if _, err := os.Stat(filepath.Join(objects, "ff")); err == nil {
		return nil // made before
	}
	for _, d := range []string{dir, objects, filepath.Join(dir, "partial"), filepath.Join(dir, "entries"), filepath.Join(dir, recordsDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	for i := 0; i < 256; i++ {
		if err := os.MkdirAll(filepath.Join(objects, fmt.Sprintf("%02x", i)), 0o700); err != nil {
			return err
		}
	}
	for _, d := range []string{objects, dir} {
		if err := durable.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}
