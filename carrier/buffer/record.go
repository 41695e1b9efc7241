package buffer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/messor-sync/messor/internal/durable"
	"github.com/messor-sync/messor/protocol"
)

// Every committed entry also has a record, written and made durable before
// the index commits it and dropped after the index releases it. Objects are
// content-addressed and carry no names, so these records are what lets
// Recover rebuild a lost or corrupt index without losing a carried
// file.
//
// The group commit writes one record file per batch (records/NAME.jsonl,
// one JSON line per commit in it), made durable with the batch's objects
// before the index transaction. Each indexed entry names its file
// (storedEntry.Rec) and the index counts the live entries per file
// (bucketRecFiles). An entry indexed already keeps the file it has, and
// its line in the new file is dropped. A release that leaves a file without
// live entries removes it; one that leaves some marks the file
// (bucketRecDirty) in the same transaction and rewrites it afterwards with
// only those (a new file under the same name, by rename); a crash before
// the rewrite leaves the mark, and the next Open rewrites it (a
// Release that leaves none marks it too, and the rewrite removes it). So a
// recovered index never brings back what was delivered. A file the index
// does not know and has not marked was written by a batch whose
// transaction a crash cut off (or an index lost it): its objects were
// made durable with it, so Open indexes the entries whose objects
// verify, and moves a file with none (a torn one) to quarantine/. In a
// file the index knows and has not marked every line is live, so a line
// whose entry the index does not list was lost by it, and is indexed the
// same way.
//
// Why a file per batch: a file per entry (as buffers written by messor
// before 2026-11-26 have, entries/*.json, still read and released) cost a
// second new inode per small carried file, and on ext4 after heavy
// deletion every new inode is a scan of recently freed ones: carrying
// 1,250 small files over emulated Wi-Fi took 3.0 s with one record file
// each and 1.7 s without. Batch files live in records/, not entries/,
// because an older messor opening the buffer removes every file in
// entries/ it does not expect.

const recordVersion = 1

type entryRecord struct {
	V int `json:"v"`
	Entry
}

// marshalRecord encodes e as a record file's content.
func marshalRecord(e Entry) []byte {
	b, _ := json.Marshal(entryRecord{V: recordVersion, Entry: e})
	return append(b, '\n')
}

// parseRecord decodes and checks a record file: only an entry the carrier
// could have committed is accepted.
func parseRecord(b []byte) (Entry, error) {
	var r entryRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return Entry{}, fmt.Errorf("record: %w", err)
	}
	if r.V != recordVersion {
		return Entry{}, fmt.Errorf("record: version %d, want %d", r.V, recordVersion)
	}
	e := r.Entry
	if err := protocol.CheckHostName(e.Source); err != nil {
		return Entry{}, fmt.Errorf("record: source: %w", err)
	}
	if err := protocol.CheckHostName(e.Dest); err != nil {
		return Entry{}, fmt.Errorf("record: dest: %w", err)
	}
	if _, err := protocol.CleanRelPath(e.Path); err != nil {
		return Entry{}, fmt.Errorf("record: %w", err)
	}
	if len(e.Hash) != 2*sha256.Size || strings.ToLower(e.Hash) != e.Hash {
		return Entry{}, fmt.Errorf("record: bad sha256 %q", e.Hash)
	}
	if _, err := hex.DecodeString(e.Hash); err != nil {
		return Entry{}, fmt.Errorf("record: bad sha256 %q", e.Hash)
	}
	if e.Size < 0 {
		return Entry{}, fmt.Errorf("record: negative size %d", e.Size)
	}
	return e, nil
}

// recordExt and legacyRecordExt name batch record files (in recordsDir)
// and the one-entry record files of older buffers (in entries/). Batch
// files have a directory of their own because an older messor opening the
// buffer removes every file in entries/ it does not expect.
const (
	recordExt       = ".jsonl"
	legacyRecordExt = ".json"
	recordsDir      = "records"
)

// recordDirs hold record files: older buffers' first.
var recordDirs = []string{"entries", recordsDir}

// recordPath is where a buffer written before batch records kept e's record.
func (b *Buffer) recordPath(e Entry) string {
	h := sha256.Sum256(e.Key())
	return filepath.Join(b.dir, "entries", hex.EncodeToString(h[:16])+legacyRecordExt)
}

// recordFile is the path of the batch record file name.
func (b *Buffer) recordFile(name string) string {
	return filepath.Join(b.dir, recordsDir, name)
}

// newRecordName names a new batch record file: unique within this buffer
// (one run at a time holds it; the clock and a random part set it apart
// from every earlier run's).
func (b *Buffer) newRecordName() string {
	b.recSeq++
	var r [4]byte
	rand.Read(r[:])
	return fmt.Sprintf("%016x-%04x-%s%s", time.Now().UnixNano(), b.recSeq&0xffff, hex.EncodeToString(r[:]), recordExt)
}

// storedEntry is an entry as the index holds it, with the batch record
// file that holds its record ("" for a one-entry record of an older
// buffer). Its JSON decodes as an Entry too.
type storedEntry struct {
	Entry
	Rec string `json:"rec,omitempty"`
}

// recOf returns the record file named by the index value v of an entry.
func recOf(v []byte) string {
	var se storedEntry
	if json.Unmarshal(v, &se) != nil {
		return ""
	}
	return se.Rec
}

// countRecord adds delta to the live entries of the batch record file
// name, and reports whether none are left (the count is then dropped).
func countRecord(tx *bolt.Tx, name string, delta int) (empty bool, err error) {
	fb := tx.Bucket(bucketRecFiles)
	n, _ := strconv.Atoi(string(fb.Get([]byte(name))))
	n += delta
	if n <= 0 {
		return true, fb.Delete([]byte(name))
	}
	return false, fb.Put([]byte(name), []byte(strconv.Itoa(n)))
}

// rewriteRecords replaces the batch record file name with one holding only
// the entries the index still links to it. A crash part way leaves the old
// file or the new one whole.
func (b *Buffer) rewriteRecords(name string) error {
	p := b.recordFile(name)
	ents, _, err := readRecords(p)
	if err != nil {
		return err
	}
	var out []byte
	err = b.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEntries)
		seen := map[string]bool{}
		for _, e := range ents {
			k := string(e.Key())
			if v := eb.Get(e.Key()); v != nil && recOf(v) == name && !seen[k] {
				seen[k] = true
				out = append(out, marshalRecord(e)...)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(out) == 0 {
		return os.Remove(p)
	}
	return durable.WriteFile(p, out)
}

// readRecords parses a record file of either kind. Lines that do not parse
// are returned as bad, the rest as entries.
func readRecords(p string) (ents []Entry, bad []error, err error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	if !strings.HasSuffix(p, recordExt) {
		if len(data) > 64<<10 {
			return nil, []error{errors.New("record too large")}, nil
		}
		e, err := parseRecord(data)
		if err != nil {
			return nil, []error{err}, nil
		}
		return []Entry{e}, nil, nil
	}
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e, err := parseRecord(line)
		if err != nil {
			bad = append(bad, fmt.Errorf("line %d: %w", i+1, err))
			continue
		}
		ents = append(ents, e)
	}
	return ents, bad, nil
}

// isRecordFile reports whether name is a record file of either kind.
func isRecordFile(name string) bool {
	return strings.HasSuffix(name, recordExt) || strings.HasSuffix(name, legacyRecordExt)
}

// RecoverReport says what Recover did.
type RecoverReport struct {
	MovedAside string   // where the damaged index is kept ("" if there was none)
	Restored   int      // entries rebuilt from their records, objects verified
	Lost       []string // records whose object is missing or damaged, or unreadable records
	Orphans    []string // objects no record names, moved to quarantine/ (not deleted)
}

// QuarantineDir, in the buffer, holds what messor found there and could
// not place: objects that no index entry or record names, record files
// naming nothing that could be indexed. messor never deletes them.
const QuarantineDir = "quarantine"

// Recover rebuilds the buffer index in dir after Open reported
// ErrIndexCorrupt, from the records (records/, or entries/ in an older
// buffer): every entry whose object is present and verifies (SHA-256).
// The new index is built beside the old one (index.db.rebuild), made
// durable, and renamed over it; the damaged one is kept under another name
// (a hard link). Killed at any moment, it leaves the old index or the new
// one whole, never an empty one, and never removes a record or an object.
// Record files keep only live entries (see above: a file a crash left
// naming delivered ones is still marked, and Open rewrites it), so
// nothing delivered comes back. (A mark the index lost with the index is
// gone too: such a file may name delivered entries, which are then
// delivered again, found at their destination or left as a second copy.)
// Objects that no record names are moved to quarantine/ rather than
// deleted; one a record names that is missing is taken back from there
// where a copy verifies. The outbox copies of files committed but not yet removed are not
// remembered; the next pickup carries such a file again and, its content
// being stored already, keeps one copy. It holds the buffer's lock while it
// works: it fails with ErrBusy while a run has the buffer open or
// another recover works on it (index.db missing too).
func Recover(dir string) (*RecoverReport, error) {
	rep := &RecoverReport{}
	for _, d := range []string{dir, filepath.Join(dir, "objects"), filepath.Join(dir, "partial"), filepath.Join(dir, "entries"), filepath.Join(dir, recordsDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("buffer %s: %w", dir, err)
		}
	}
	dbPath := filepath.Join(dir, "index.db")
	// The directory's lock keeps recovers to one at a time even with no
	// index.db; index.db's keeps runs out.
	for _, p := range []string{dir, dbPath} {
		unlock, busy := lockPath(p)
		if busy {
			return nil, fmt.Errorf("buffer %s: %w; recover it when that run has ended", dir, ErrBusy)
		}
		defer unlock()
	}
	b := &Buffer{dir: dir}
	verified := map[string]bool{}
	ents, err := b.recoverable(rep, verified)
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w", dir, err)
	}
	tmp := dbPath + ".rebuild"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("buffer %s: %w", dir, err)
	}
	// Until it is in place, a failure (a full disk) gives back its space.
	placed := false
	defer func() {
		if !placed {
			os.Remove(tmp)
		}
	}()
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("buffer %s: new index: %w", dir, err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return rebuild(tx, ents, rep) }); err != nil { // fsynced when it commits
		return nil, fmt.Errorf("buffer %s: rebuild index: %w", dir, err)
	}
	// Keep, rather than let an open delete, objects nobody names.
	rep.Orphans, err = b.quarantineObjects(func(hash string) bool { return verified[hash] })
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w", dir, err)
	}
	if _, err := os.Stat(dbPath); err == nil {
		aside := fmt.Sprintf("%s.corrupt-%d", dbPath, time.Now().UnixNano())
		if os.Link(dbPath, aside) == nil {
			rep.MovedAside = aside
		}
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return nil, fmt.Errorf("buffer %s: put the rebuilt index in place: %w", dir, err)
	}
	placed = true
	if err := durable.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("buffer %s: %w", dir, err)
	}
	return rep, db.Close()
}

// recovered is an entry found in a record file, whose object verifies.
type recovered struct {
	e    Entry
	file string // batch record file name; "" for a one-entry record
}

// recoverable reads every record file and returns the entries whose object
// verifies (verified caches hashes checked); what it cannot recover goes to
// rep.Lost.
func (b *Buffer) recoverable(rep *RecoverReport, verified map[string]bool) ([]recovered, error) {
	recs, err := b.recordFiles()
	if err != nil {
		return nil, err
	}
	var ents []recovered
	for _, p := range recs {
		es, lost := b.readVerified(p, verified)
		rep.Lost = append(rep.Lost, lost...)
		for _, e := range es {
			ents = append(ents, recovered{e, batchName(p)})
		}
	}
	return ents, nil
}

// rebuild fills a new index (tx) with ents, then settles the readdresses
// a crash cut off, and counts in rep.Restored the entries it indexed.
func rebuild(tx *bolt.Tx, ents []recovered, rep *RecoverReport) error {
	rep.Restored = 0
	if err := createBuckets(tx); err != nil {
		return err
	}
	for _, f := range ents {
		added, _, err := indexEntry(tx, f.e, f.file)
		if err != nil {
			return err
		}
		if added {
			rep.Restored++
		}
	}
	for _, f := range ents {
		if err := settleReaddress(tx, f.e); err != nil {
			return err
		}
	}
	return nil
}

// recordFiles lists the buffer's record files, older buffers' first. A
// directory of them that is missing holds none.
func (b *Buffer) recordFiles() ([]string, error) {
	var out []string
	for _, d := range recordDirs {
		des, err := os.ReadDir(filepath.Join(b.dir, d))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, de := range des {
			if isRecordFile(de.Name()) {
				out = append(out, filepath.Join(b.dir, d, de.Name()))
			}
		}
	}
	return out, nil
}

// batchName is the name entries give to the batch record file p, and ""
// for a one-entry record of an older buffer.
func batchName(p string) string {
	if strings.HasSuffix(p, recordExt) {
		return filepath.Base(p)
	}
	return ""
}

// readVerified reads the record file p and returns its entries whose
// object is in place and verifies (verified caches hashes checked), and a
// line for each that is not, or does not parse.
func (b *Buffer) readVerified(p string, verified map[string]bool) (ents []Entry, lost []string) {
	es, bad, err := readRecords(p)
	if err != nil {
		bad = append(bad, err)
	}
	for _, err := range bad {
		lost = append(lost, fmt.Sprintf("%s: %v", p, err))
	}
	ents, l := b.verifiedEntries(es, verified, true)
	return ents, append(lost, l...)
}

// verifiedEntries returns the entries of es whose object is in place and
// verifies (verified caches hashes checked), and a line for each that is
// not. With fromQuarantine, a missing object is taken back from
// quarantine/ where a copy there verifies (recover does; an open does not
// hash again at every open what it cannot place).
func (b *Buffer) verifiedEntries(es []Entry, verified map[string]bool, fromQuarantine bool) (ents []Entry, lost []string) {
	for _, e := range es {
		ok, seen := verified[e.Hash]
		if !seen {
			ok = verifyObject(b.ObjectPath(e.Hash), e.Hash, e.Size) == nil || fromQuarantine && b.takeBack(e.Hash, e.Size)
			verified[e.Hash] = ok
		}
		if !ok {
			lost = append(lost, fmt.Sprintf("%s -> %s: %s: object %s missing or damaged", e.Source, e.Dest, e.Path, e.Hash))
			continue
		}
		ents = append(ents, e)
	}
	return ents, lost
}

// indexEntry indexes e, whose record is in the batch record file named
// file ("" for a one-entry record) and whose object is in place, unless an
// entry of that key is indexed already. It reports whether it indexed e,
// and whether that made the object known.
func indexEntry(tx *bolt.Tx, e Entry, file string) (added, newObject bool, err error) {
	eb, ob := tx.Bucket(bucketEntries), tx.Bucket(bucketObjects)
	if eb.Get(e.Key()) != nil {
		return false, false, nil
	}
	var rec objectRec
	v := ob.Get([]byte(e.Hash))
	if v != nil {
		if err := json.Unmarshal(v, &rec); err != nil {
			return false, false, err
		}
	}
	rec.Size = e.Size
	rec.Refs++
	ev, _ := json.Marshal(storedEntry{e, file})
	rv, _ := json.Marshal(rec)
	if err := eb.Put(e.Key(), ev); err != nil {
		return false, false, err
	}
	if err := ob.Put([]byte(e.Hash), rv); err != nil {
		return false, false, err
	}
	if file != "" {
		if _, err := countRecord(tx, file, 1); err != nil {
			return false, false, err
		}
	}
	return true, v == nil, nil
}

// takeBack moves a copy of the object hash that verifies from quarantine/
// (where an open or a recover put it, named by nothing then) back to its
// place, if that is free, and reports whether it did.
func (b *Buffer) takeBack(hash string, size int64) bool {
	to := b.ObjectPath(hash)
	if _, err := os.Lstat(to); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	q := filepath.Join(b.dir, QuarantineDir)
	names, _ := filepath.Glob(filepath.Join(q, hash+"*"))
	for _, p := range names {
		if base := filepath.Base(p); base != hash && !strings.HasPrefix(base, hash+".") {
			continue
		}
		if verifyObject(p, hash, size) != nil || os.Rename(p, to) != nil {
			continue
		}
		durable.SyncDir(filepath.Dir(to))
		durable.SyncDir(q)
		return true
	}
	return false
}

// quarantineObjects moves the object files for which keep is false to
// quarantine/, and returns where they went.
func (b *Buffer) quarantineObjects(keep func(hash string) bool) ([]string, error) {
	var moved []string
	err := filepath.WalkDir(filepath.Join(b.dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || keep(d.Name()) {
			return err
		}
		to, err := b.quarantine(p)
		if err == nil {
			moved = append(moved, to)
		}
		return err
	})
	return moved, err
}

// quarantine moves the file p to quarantine/ and returns its new path.
// It never replaces a file there (a damaged copy of an object must not
// take the place of a whole one).
func (b *Buffer) quarantine(p string) (string, error) {
	to := filepath.Join(b.dir, QuarantineDir, filepath.Base(p))
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return "", err
	}
	if _, err := os.Lstat(to); err == nil {
		to = fmt.Sprintf("%s.%d", to, time.Now().UnixNano())
	}
	return to, os.Rename(p, to)
}

func verifyObject(p, hash string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != size || hex.EncodeToString(h.Sum(nil)) != hash {
		return errors.New("content does not match")
	}
	return nil
}

// settleReaddress finishes a readdress a crash cut off: when e was
// readdressed (From) and is indexed, the entry it replaced is released
// if it is still indexed, and its record file marked for the rewrite
// that drops its line (rewriteDirty, at the next open).
func settleReaddress(tx *bolt.Tx, e Entry) error {
	if e.From == "" {
		return nil
	}
	eb, ob := tx.Bucket(bucketEntries), tx.Bucket(bucketObjects)
	if eb.Get(e.Key()) == nil {
		return nil
	}
	old := e
	old.Dest, old.From = e.From, ""
	v := eb.Get(old.Key())
	if v == nil {
		return nil
	}
	name := recOf(v)
	if name == "" {
		return nil // an older messor's record: Readdress refuses those
	}
	if err := eb.Delete(old.Key()); err != nil {
		return err
	}
	if _, err := countRecord(tx, name, -1); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRecDirty).Put([]byte(name), nil); err != nil {
		return err
	}
	var rec objectRec
	if err := json.Unmarshal(ob.Get([]byte(e.Hash)), &rec); err != nil {
		return err
	}
	rec.Refs-- // e still uses it
	rv, _ := json.Marshal(rec)
	return ob.Put([]byte(e.Hash), rv)
}
