package carrier

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/messor-sync/messor/protocol"
)

// Every committed entry also has a small record file in entries/, written
// and synced before the index commits it and removed after the index
// releases it. Objects are content-addressed and carry no names, so these
// records are what lets RecoverBuffer rebuild a lost or corrupt index
// without losing a carried file. One file per entry (rather than a journal)
// needs no compaction and no parsing of a torn tail. A record is written in
// place by the group commit and made durable (with its object) before the
// index transaction: a record torn by a crash belongs to an entry that was
// never indexed, and OpenBuffer drops it. An entry committed again while it
// is indexed keeps the record it has.

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

func (b *Buffer) recordPath(e Entry) string {
	h := sha256.Sum256(e.key())
	return filepath.Join(b.dir, "entries", hex.EncodeToString(h[:16])+".json")
}

// writeRecord writes e's record durably.
func (b *Buffer) writeRecord(e Entry) error {
	p := b.recordPath(e)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return writeFileSync(p, marshalRecord(e))
}

// writeFileSync writes p whole or not at all (temp file, fsync, rename,
// fsync of the directory).
func writeFileSync(p string, data []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(p))
}

// RecoverReport says what RecoverBuffer did.
type RecoverReport struct {
	MovedAside string   // where the damaged index went ("" if there was none)
	Restored   int      // entries rebuilt from their records, objects verified
	Lost       []string // records whose object is missing or damaged, or unreadable records
	Orphans    []string // objects no record names, moved to orphans/ (not deleted)
}

// RecoverBuffer rebuilds the buffer index in dir after OpenBuffer reported
// ErrIndexCorrupt: it moves index.db aside, and rebuilds every entry from
// its record in entries/ whose object is present and verifies (SHA-256).
// Objects that no record names are moved to orphans/ rather than deleted.
// The outbox copies of files committed but not yet removed are not
// remembered; the next pickup carries such a file again and, its content
// being stored already, keeps one copy. The buffer must not be in use.
func RecoverBuffer(dir string) (*RecoverReport, error) {
	rep := &RecoverReport{}
	for _, d := range []string{dir, filepath.Join(dir, "objects"), filepath.Join(dir, "partial"), filepath.Join(dir, "entries")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("buffer %s: %w", dir, err)
		}
	}
	dbPath := filepath.Join(dir, "index.db")
	if inUse(dbPath) {
		return nil, fmt.Errorf("buffer %s: %w; recover it when that run has ended", dir, ErrBufferBusy)
	}
	if _, err := os.Stat(dbPath); err == nil {
		rep.MovedAside = fmt.Sprintf("%s.corrupt-%d", dbPath, time.Now().UnixNano())
		if err := os.Rename(dbPath, rep.MovedAside); err != nil {
			return nil, fmt.Errorf("buffer %s: move the damaged index aside: %w", dir, err)
		}
	}
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("buffer %s: new index: %w", dir, err)
	}
	defer db.Close()
	b := &Buffer{dir: dir, db: db}

	names, err := filepath.Glob(filepath.Join(dir, "entries", "*.json"))
	if err != nil {
		return nil, err
	}
	verified := map[string]bool{}
	var ents []Entry
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err == nil && len(data) > 64<<10 {
			err = errors.New("record too large")
		}
		var e Entry
		if err == nil {
			e, err = parseRecord(data)
		}
		if err != nil {
			rep.Lost = append(rep.Lost, fmt.Sprintf("%s: %v", n, err))
			continue
		}
		ok, seen := verified[e.Hash]
		if !seen {
			ok = verifyObject(b.ObjectPath(e.Hash), e.Hash, e.Size) == nil
			verified[e.Hash] = ok
		}
		if !ok {
			rep.Lost = append(rep.Lost, fmt.Sprintf("%s -> %s: %s: object %s missing or damaged", e.Source, e.Dest, e.Path, e.Hash))
			continue
		}
		ents = append(ents, e)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, n := range [][]byte{bucketEntries, bucketObjects, bucketCarried} {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		eb, ob := tx.Bucket(bucketEntries), tx.Bucket(bucketObjects)
		for _, e := range ents {
			if eb.Get(e.key()) != nil {
				continue
			}
			var rec objectRec
			if v := ob.Get([]byte(e.Hash)); v != nil {
				if err := json.Unmarshal(v, &rec); err != nil {
					return err
				}
			}
			rec.Size = e.Size
			rec.Refs++
			ev, _ := json.Marshal(e)
			rv, _ := json.Marshal(rec)
			if err := eb.Put(e.key(), ev); err != nil {
				return err
			}
			if err := ob.Put([]byte(e.Hash), rv); err != nil {
				return err
			}
			rep.Restored++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer %s: rebuild index: %w", dir, err)
	}
	// Keep, rather than let the next open delete, objects nobody names.
	objDir := filepath.Join(dir, "objects")
	err = filepath.WalkDir(objDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || verified[d.Name()] {
			return err
		}
		to := filepath.Join(dir, "orphans", d.Name())
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return err
		}
		rep.Orphans = append(rep.Orphans, to)
		return os.Rename(p, to)
	})
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %w", dir, err)
	}
	return rep, db.Close()
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
