package buffer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/messor-sync/messor/internal/durable"
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
	o        Origin
	partial  string // the file to store, or:
	data     []byte // the content to store
	reserved int64
	done     chan opResult
	// after: a release that must not happen unless this commit does
	// (Readdress): it is skipped when after failed.
	after *op

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
// next batch (Flush waits for that). For index changes whose loss in a
// crash is harmless (see ForgetCarried and Release).
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

// Flush waits until everything queued so far is applied.
func (b *Buffer) Flush() error {
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

// apply performs a batch in its phases: objects into place, one record
// file for the batch's commits, one sync that makes them all durable, one
// index transaction, then the removals and rewrites the transaction
// decided, and finally the accounting and the replies.
func (b *Buffer) apply(batch []*op) {
	st := &batchFiles{dirSet: map[string]bool{}, stored: map[string]bool{}}
	for _, o := range batch {
		if o.kind == opCommit && b.storeObject(o, st) {
			st.recOps = append(st.recOps, o)
		}
	}
	b.writeBatchRecord(st)
	b.syncBatch(batch, st)
	res, err := b.indexBatch(batch, st)
	b.cleanUp(batch, st, res, err)
	b.finish(batch, res, err)
}

// batchFiles is what the file phases of a batch wrote, to be made durable.
type batchFiles struct {
	files, dirs []string
	dirSet      map[string]bool
	stored      map[string]bool // objects put in place by this batch
	// Every commit gets a line in this batch's record file. An entry
	// indexed already (committed again: the outbox file was touched, or
	// after a recover) keeps the record it has, and its new line is
	// dropped (indexCommit); deciding that here, before the transaction,
	// would be wrong when a release of the same entry comes first in the
	// batch.
	recOps  []*op
	recName string // the batch's record file, "" if none was written
}

func (st *batchFiles) addDir(d string) {
	if !st.dirSet[d] {
		st.dirSet[d] = true
		st.dirs = append(st.dirs, d)
	}
}

// storeObject puts the content of commit o in place as its object (or
// drops its partial when that content is there already), and reports
// whether o goes on to the record; otherwise o.err says why not.
func (b *Buffer) storeObject(o *op, st *batchFiles) bool {
	obj := b.ObjectPath(o.e.Hash)
	prefix := filepath.Dir(obj)
	if _, err := os.Stat(prefix); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(prefix, 0o700); err != nil {
			o.err = fmt.Errorf("buffer %s: %w", b.dir, err)
			return false
		}
		st.addDir(filepath.Join(b.dir, "objects"))
	} else if err != nil {
		o.err = fmt.Errorf("buffer %s: %w", b.dir, err)
		return false
	}
	_, serr := os.Stat(obj)
	if serr != nil && !errors.Is(serr, fs.ErrNotExist) {
		// Cannot tell whether it is there: never write over it.
		o.err = fmt.Errorf("buffer %s: store %s: %w", b.dir, o.e.Path, serr)
		return false
	}
	if serr == nil || st.stored[o.e.Hash] {
		if o.data == nil && o.partial != "" {
			os.Remove(o.partial) // the content is stored already
		}
		return true
	}
	var err error
	if o.data != nil {
		err = os.WriteFile(obj, o.data, 0o600)
	} else {
		err = os.Rename(o.partial, obj)
	}
	if err != nil {
		os.Remove(obj)
		o.err = fmt.Errorf("buffer %s: store %s: %w", b.dir, o.e.Path, err)
		return false
	}
	o.newObj = obj
	st.stored[o.e.Hash] = true
	st.files = append(st.files, obj)
	st.addDir(prefix)
	return true
}

// writeBatchRecord writes one record file for the commits that got this
// far, and names it in each; if it cannot, they fail.
func (b *Buffer) writeBatchRecord(st *batchFiles) {
	if len(st.recOps) == 0 {
		return
	}
	name := b.newRecordName()
	var data []byte
	for _, o := range st.recOps {
		data = append(data, marshalRecord(o.e)...)
	}
	rp := b.recordFile(name)
	if err := durable.WriteNew(rp, data); err != nil {
		for _, o := range st.recOps {
			o.err = fmt.Errorf("buffer %s: record %s: %w", b.dir, o.e.Path, err)
		}
		return
	}
	st.recName = name
	for _, o := range st.recOps {
		o.rec = name
	}
	st.files = append(st.files, rp)
	st.addDir(filepath.Dir(rp))
}

// syncBatch makes what the batch wrote durable; if it cannot, its commits
// fail.
func (b *Buffer) syncBatch(batch []*op, st *batchFiles) {
	if len(st.files) == 0 {
		return
	}
	if err := durable.Sync(b.dir, st.files, st.dirs); err != nil {
		err = fmt.Errorf("buffer %s: sync: %w", b.dir, err)
		for _, o := range batch {
			if o.kind == opCommit && o.err == nil {
				o.err = err
			}
		}
	}
}

// indexed is what a batch's index transaction did, for the phases after
// it.
type indexed struct {
	added, dropped int64           // bytes of objects the index gained and lost
	dropObjs       []string        // object files no entry uses any more
	dropRecs       []string        // one-entry record files of released entries
	rewrite        map[string]bool // record files left naming entries no longer live
	linked         int             // entries of this batch's record file now indexed
	dedup          map[*op]bool    // commits whose content was stored already
}

// indexBatch applies the batch's operations that got this far in one
// index transaction.
func (b *Buffer) indexBatch(batch []*op, st *batchFiles) (*indexed, error) {
	var res *indexed
	err := b.db.Update(func(tx *bolt.Tx) error {
		res = &indexed{rewrite: map[string]bool{}, dedup: map[*op]bool{}} // afresh if bbolt retries
		for _, name := range b.cleaned {
			if err := tx.Bucket(bucketRecDirty).Delete([]byte(name)); err != nil {
				return err
			}
		}
		freed := map[string]int64{}
		for _, o := range batch {
			if o.err == nil && o.after != nil && o.after.err != nil {
				o.err = o.after.err
			}
			if o.err != nil {
				continue
			}
			var err error
			switch o.kind {
			case opForget:
				err = tx.Bucket(bucketCarried).Delete(o.o.key())
			case opCommit:
				err = indexCommit(tx, o, res)
			case opRelease:
				err = b.indexRelease(tx, o, res, freed)
			}
			if err != nil {
				return err
			}
		}
		// Record files that now name entries no longer live are marked,
		// so that a crash before they are rewritten has them rewritten
		// at the next open (check), not recovered as they are.
		if st.recName != "" && res.linked > 0 && res.linked < len(st.recOps) {
			res.rewrite[st.recName] = true
		}
		db := tx.Bucket(bucketRecDirty)
		for name := range res.rewrite {
			if err := db.Put([]byte(name), nil); err != nil {
				return err
			}
		}
		// An object freed and stored again within the batch stays.
		ob := tx.Bucket(bucketObjects)
		for h, size := range freed {
			if ob.Get([]byte(h)) == nil {
				res.dropObjs = append(res.dropObjs, b.ObjectPath(h))
				res.dropped += size
			} else {
				res.added -= size // counted as new above, but the file is the same
			}
		}
		return nil
	})
	if err != nil {
		return &indexed{dedup: map[*op]bool{}}, fmt.Errorf("buffer %s: index: %w", b.dir, err)
	}
	return res, nil
}

// indexCommit indexes the entry of commit o, its object and its origin.
func indexCommit(tx *bolt.Tx, o *op, res *indexed) error {
	ob, eb := tx.Bucket(bucketObjects), tx.Bucket(bucketEntries)
	var rec objectRec
	if v := ob.Get([]byte(o.e.Hash)); v != nil {
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		res.dedup[o] = true
	} else {
		rec.Size = o.e.Size
		res.added += o.e.Size
	}
	prev := eb.Get(o.e.Key())
	if prev == nil {
		rec.Refs++
	}
	// The entry names its record file: this batch's for a new entry, the
	// one it has for an indexed one.
	recFile := o.rec
	if prev != nil {
		recFile = recOf(prev)
	} else if recFile != "" {
		if _, err := countRecord(tx, recFile, 1); err != nil {
			return err
		}
		res.linked++
	}
	ev, err := json.Marshal(storedEntry{o.e, recFile})
	if err != nil {
		return err
	}
	rv, _ := json.Marshal(rec)
	if err := ob.Put([]byte(o.e.Hash), rv); err != nil {
		return err
	}
	if err := eb.Put(o.e.Key(), ev); err != nil {
		return err
	}
	if o.o == (Origin{}) {
		return nil // readdressed: the entry's origin is recorded already
	}
	return tx.Bucket(bucketCarried).Put(o.o.key(), []byte(o.e.Hash))
}

// indexRelease removes the entry of release o, marks its record file for
// a rewrite (or, an older buffer's, for removal), and drops a reference
// to its object; freed collects objects no entry uses any more.
func (b *Buffer) indexRelease(tx *bolt.Tx, o *op, res *indexed, freed map[string]int64) error {
	ob, eb := tx.Bucket(bucketObjects), tx.Bucket(bucketEntries)
	v := eb.Get(o.e.Key())
	if v == nil {
		return nil
	}
	name := recOf(v)
	if err := eb.Delete(o.e.Key()); err != nil {
		return err
	}
	if name == "" {
		res.dropRecs = append(res.dropRecs, b.recordPath(o.e)) // an older buffer's
	} else if _, err := countRecord(tx, name, -1); err != nil {
		return err
	} else {
		// Marked even when none is left (the rewrite then removes it):
		// at the next open, a file the index does not know is one it
		// never committed, whose entries are carried (check).
		res.rewrite[name] = true
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
		return ob.Delete([]byte(o.e.Hash))
	}
	rv, _ := json.Marshal(rec)
	return ob.Put([]byte(o.e.Hash), rv)
}

// cleanUp removes what the transaction left unused and rewrites the record
// files it marked; err is the transaction's.
func (b *Buffer) cleanUp(batch []*op, st *batchFiles, res *indexed, err error) {
	// Unmarked or not (a failed transaction may still have reached the
	// disk), the files are marked again by the release that touches them
	// next; a mark left behind only costs a rewrite at the next open.
	b.cleaned = nil
	if err != nil {
		for _, o := range batch {
			if o.err == nil {
				o.err = err
			}
		}
		// It may still have reached the disk: leave everything for the
		// check at the next open to reconcile.
		return
	}
	inUse := map[string]bool{} // objects a successful commit of this batch points at
	for _, o := range batch {
		if o.kind == opCommit && o.err == nil {
			inUse[o.e.Hash] = true
		}
	}
	// Ops that failed before the transaction (which went through without
	// them) are not indexed: nothing may point at what they wrote.
	for _, o := range batch {
		if o.kind == opCommit && o.err != nil && o.newObj != "" && !inUse[o.e.Hash] {
			os.Remove(o.newObj)
		}
	}
	if st.recName != "" && res.linked == 0 {
		os.Remove(b.recordFile(st.recName)) // it names nothing indexed
	}
	for _, p := range res.dropRecs {
		os.Remove(p)
	}
	for _, p := range res.dropObjs {
		os.Remove(p)
	}
	for name := range res.rewrite {
		if rerr := b.rewriteRecords(name); rerr != nil {
			b.Log("rewriting a record file (done again when the buffer is next opened)", fmt.Errorf("buffer %s: %s: %w", b.dir, name, rerr))
			continue
		}
		b.cleaned = append(b.cleaned, name) // unmarked by the next transaction
	}
}

// finish settles the batch's bytes against the limit and answers its ops.
func (b *Buffer) finish(batch []*op, res *indexed, err error) {
	b.mu.Lock()
	if err == nil {
		b.stored += res.added - res.dropped
	}
	for _, o := range batch {
		if o.kind == opCommit && o.err == nil {
			b.reserved -= o.reserved
		}
	}
	b.mu.Unlock()
	for _, o := range batch {
		if o.done != nil {
			o.done <- opResult{dedup: res.dedup[o], err: o.err}
		} else if o.err != nil {
			b.Log("index update deferred from a transfer failed; it is redone on the next visit", o.err)
		}
	}
}
