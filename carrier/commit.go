package carrier

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// The buffer's writes to its index go through one goroutine that groups
// whatever is waiting: for a batch of carried files, one filesystem sync
// and one index transaction instead of several fsyncs per file. Small files
// are carried at the speed of the link instead of the speed of fsync.

type opKind int

const (
	opCommit opKind = iota
	opForget
	opRelease
	opFlush // nothing: returns once everything queued before it is applied
)

type op struct {
	kind     opKind
	e        Entry
	o        origin
	partial  string // the file to store, or:
	data     []byte // the content to store
	reserved int64
	done     chan opResult

	// set while applying
	err    error
	newObj string // object file this op created
	rec    string // the batch record file holding this commit's record
}

type opResult struct {
	dedup bool
	err   error
}

// maxBatch bounds how many operations share one sync and transaction.
const maxBatch = 512

var errBufferClosed = errors.New("buffer closed")

func (b *Buffer) startCommitter() {
	b.ops = make(chan *op)
	b.kick = make(chan struct{}, 1)
	b.quit = make(chan struct{})
	b.loopDone = make(chan struct{})
	go b.commitLoop()
}

// queue hands o to the committer without waiting: it is applied with the
// next batch (flush waits for that). For index changes whose loss in a
// crash is harmless (see forgetCarried and release).
func (b *Buffer) queue(o *op) {
	if b.ops == nil {
		return
	}
	b.pmu.Lock()
	b.pending = append(b.pending, o)
	b.pmu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// flush waits until everything queued so far is applied.
func (b *Buffer) flush() error {
	return b.do(&op{kind: opFlush}).err
}

// takePending returns the queued operations.
func (b *Buffer) takePending() []*op {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	p := b.pending
	b.pending = nil
	return p
}

// do hands o to the committer and waits for its result.
func (b *Buffer) do(o *op) opResult {
	if b.ops == nil {
		return opResult{err: fmt.Errorf("buffer %s: opened read-only", b.dir)}
	}
	o.done = make(chan opResult, 1)
	select {
	case b.ops <- o:
	case <-b.quit:
		return opResult{err: fmt.Errorf("buffer %s: %w", b.dir, errBufferClosed)}
	}
	return <-o.done
}

func (b *Buffer) commitLoop() {
	defer close(b.loopDone)
	for {
		var batch []*op
		select {
		case first := <-b.ops:
			batch = append(batch, first)
		case <-b.kick:
		case <-b.quit:
			if p := b.takePending(); len(p) > 0 {
				b.apply(p)
			}
			return
		}
		batch = append(b.takePending(), batch...)
	drain:
		for len(batch) < maxBatch {
			select {
			case o := <-b.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		// Again: what was queued while we drained belongs before any
		// flush the drain picked up.
		batch = append(b.takePending(), batch...)
		if len(batch) > 0 {
			b.apply(batch)
		}
	}
}

// apply performs a batch: files first (objects into place, records
// written), one sync that makes them all durable, then one index
// transaction, then the removal of what releases freed.
func (b *Buffer) apply(batch []*op) {
	var files, dirs []string
	dirSet := map[string]bool{}
	addDir := func(d string) {
		if !dirSet[d] {
			dirSet[d] = true
			dirs = append(dirs, d)
		}
	}
	stored := map[string]bool{} // objects put in place by this batch
	// Every commit gets a line in this batch's record file. An entry
	// indexed already (committed again: the outbox file was touched, or
	// after a recover) keeps the record it has, and its new line is
	// dropped (see below); deciding that here, before the transaction,
	// would be wrong when a release of the same entry comes first in the
	// batch.
	var recOps []*op
	for _, o := range batch {
		if o.kind != opCommit {
			continue
		}
		obj := b.ObjectPath(o.e.Hash)
		prefix := filepath.Dir(obj)
		if _, err := os.Stat(prefix); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(prefix, 0o700); err != nil {
				o.err = fmt.Errorf("buffer %s: %w", b.dir, err)
				continue
			}
			addDir(filepath.Join(b.dir, "objects"))
		} else if err != nil {
			o.err = fmt.Errorf("buffer %s: %w", b.dir, err)
			continue
		}
		_, serr := os.Stat(obj)
		if serr != nil && !errors.Is(serr, fs.ErrNotExist) {
			// Cannot tell whether it is there: never write over it.
			o.err = fmt.Errorf("buffer %s: store %s: %w", b.dir, o.e.Path, serr)
			continue
		}
		if serr == nil || stored[o.e.Hash] {
			if o.data == nil {
				os.Remove(o.partial)
			}
		} else {
			var err error
			if o.data != nil {
				err = os.WriteFile(obj, o.data, 0o600)
			} else {
				err = os.Rename(o.partial, obj)
			}
			if err != nil {
				os.Remove(obj)
				o.err = fmt.Errorf("buffer %s: store %s: %w", b.dir, o.e.Path, err)
				continue
			}
			o.newObj = obj
			stored[o.e.Hash] = true
			files = append(files, obj)
			addDir(prefix)
		}
		recOps = append(recOps, o)
	}
	// One record file for the batch.
	recName := ""
	if len(recOps) > 0 {
		recName = b.newRecordName()
		var data []byte
		for _, o := range recOps {
			data = append(data, marshalRecord(o.e)...)
		}
		rp := b.recordFile(recName)
		if err := writeNewFile(rp, data); err != nil {
			for _, o := range recOps {
				o.err = fmt.Errorf("buffer %s: record %s: %w", b.dir, o.e.Path, err)
			}
		} else {
			for _, o := range recOps {
				o.rec = recName
			}
			files = append(files, rp)
			addDir(filepath.Dir(rp))
		}
	}
	if len(files) > 0 {
		if err := durable(b.dir, files, dirs); err != nil {
			err = fmt.Errorf("buffer %s: sync: %w", b.dir, err)
			for _, o := range batch {
				if o.kind == opCommit && o.err == nil {
					o.err = err
				}
			}
		}
	}

	// One transaction for everything that got this far.
	var added, dropped int64
	var dropObjs, dropRecs []string
	rewrite := map[string]bool{} // record files left with fewer live entries
	linked := 0                  // entries of this batch's record file now indexed
	dedup := map[*op]bool{}
	err := b.db.Update(func(tx *bolt.Tx) error {
		added, dropped, dropObjs, dropRecs, linked = 0, 0, nil, nil, 0
		clear(dedup)
		clear(rewrite)
		for _, name := range b.cleaned {
			if err := tx.Bucket(bucketRecDirty).Delete([]byte(name)); err != nil {
				return err
			}
		}
		ob, eb, cb := tx.Bucket(bucketObjects), tx.Bucket(bucketEntries), tx.Bucket(bucketCarried)
		freed := map[string]int64{}
		for _, o := range batch {
			if o.err != nil {
				continue
			}
			switch o.kind {
			case opForget:
				if err := cb.Delete(o.o.key()); err != nil {
					return err
				}
			case opCommit:
				var rec objectRec
				if v := ob.Get([]byte(o.e.Hash)); v != nil {
					if err := json.Unmarshal(v, &rec); err != nil {
						return err
					}
					dedup[o] = true
				} else {
					rec.Size = o.e.Size
					added += o.e.Size
				}
				prev := eb.Get(o.e.key())
				if prev == nil {
					rec.Refs++
				}
				// The entry names its record file: this batch's for a
				// new entry, the one it has for an indexed one.
				recFile := o.rec
				if prev != nil {
					recFile = recOf(prev)
				} else if recFile != "" {
					if _, err := countRecord(tx, recFile, 1); err != nil {
						return err
					}
					linked++
				}
				ev, err := json.Marshal(storedEntry{o.e, recFile})
				if err != nil {
					return err
				}
				rv, _ := json.Marshal(rec)
				if err := ob.Put([]byte(o.e.Hash), rv); err != nil {
					return err
				}
				if err := eb.Put(o.e.key(), ev); err != nil {
					return err
				}
				if err := cb.Put(o.o.key(), []byte(o.e.Hash)); err != nil {
					return err
				}
			case opRelease:
				v := eb.Get(o.e.key())
				if v == nil {
					continue
				}
				name := recOf(v)
				if err := eb.Delete(o.e.key()); err != nil {
					return err
				}
				if name == "" {
					dropRecs = append(dropRecs, b.recordPath(o.e)) // an older buffer's
				} else if _, err := countRecord(tx, name, -1); err != nil {
					return err
				} else {
					// Marked even when none is left (the rewrite then
					// removes it): at the next open, a file the index
					// does not know is one it never committed, whose
					// entries are carried (check).
					rewrite[name] = true
				}
				var rec objectRec
				if v := ob.Get([]byte(o.e.Hash)); v != nil {
					if err := json.Unmarshal(v, &rec); err != nil {
						return err
					}
				}
				rec.Refs--
				if rec.Refs <= 0 {
					freed[o.e.Hash] = rec.Size
					if err := ob.Delete([]byte(o.e.Hash)); err != nil {
						return err
					}
					continue
				}
				rv, _ := json.Marshal(rec)
				if err := ob.Put([]byte(o.e.Hash), rv); err != nil {
					return err
				}
			}
		}
		// Record files that now name entries no longer live are marked,
		// so that a crash before they are rewritten has them rewritten
		// at the next open (check), not recovered as they are.
		if recName != "" && linked > 0 && linked < len(recOps) {
			rewrite[recName] = true
		}
		db := tx.Bucket(bucketRecDirty)
		for name := range rewrite {
			if err := db.Put([]byte(name), nil); err != nil {
				return err
			}
		}
		// An object freed and stored again within the batch stays.
		for h, size := range freed {
			if ob.Get([]byte(h)) == nil {
				dropObjs = append(dropObjs, b.ObjectPath(h))
				dropped += size
			} else {
				added -= size // counted as new above, but the file is the same
			}
		}
		return nil
	})
	// Unmarked or not (a failed transaction may still have reached the
	// disk), the files are marked again by the release that touches them
	// next; a mark left behind only costs a rewrite at the next open.
	b.cleaned = nil
	if err != nil {
		err = fmt.Errorf("buffer %s: index: %w", b.dir, err)
		for _, o := range batch {
			if o.err == nil {
				o.err = err
			}
		}
	}
	inUse := map[string]bool{} // objects a successful commit of this batch points at
	for _, o := range batch {
		if o.kind == opCommit && o.err == nil {
			inUse[o.e.Hash] = true
		}
	}
	// Ops that failed before the transaction (which went through without
	// them) are not indexed: nothing may point at what they wrote. If the
	// transaction itself failed, it may still have reached the disk; leave
	// everything for the check at the next open to reconcile.
	for _, o := range batch {
		if err == nil && o.kind == opCommit && o.err != nil && o.newObj != "" && !inUse[o.e.Hash] {
			os.Remove(o.newObj)
		}
	}
	if err == nil && recName != "" && linked == 0 {
		os.Remove(b.recordFile(recName)) // it names nothing indexed
	}
	if err == nil {
		for _, p := range dropRecs {
			os.Remove(p)
		}
		for _, p := range dropObjs {
			os.Remove(p)
		}
		for name := range rewrite {
			if rerr := b.rewriteRecords(name); rerr != nil {
				b.log("rewriting a record file (done again when the buffer is next opened)", fmt.Errorf("buffer %s: %s: %w", b.dir, name, rerr))
				continue
			}
			b.cleaned = append(b.cleaned, name) // unmarked by the next transaction
		}
	}
	b.mu.Lock()
	if err == nil {
		b.stored += added - dropped
	}
	for _, o := range batch {
		if o.kind == opCommit && o.err == nil {
			b.reserved -= o.reserved
		}
	}
	b.mu.Unlock()
	for _, o := range batch {
		if o.done != nil {
			o.done <- opResult{dedup: dedup[o], err: o.err}
		} else if o.err != nil {
			b.log("index update deferred from a transfer failed; it is redone on the next visit", o.err)
		}
	}
}

// writeNewFile creates p, which must not exist, with data; the caller
// makes it durable before it indexes anything that p describes. (No
// temporary name: a record file torn by a crash describes entries that were
// never indexed, and is dropped at open.)
func writeNewFile(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

// fsyncAll fsyncs files, then directories.
func fsyncAll(files, dirs []string) error {
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}
