package buffer

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// CarriedFor lists the entries carried for dest: all of them, or with a
// path only the file at path and those under it.
func (b *Buffer) CarriedFor(dest, path string) ([]Entry, error) {
	ents, err := b.Entries()
	if err != nil {
		return nil, err
	}
	path = strings.Trim(path, "/")
	return slices.DeleteFunc(ents, func(e Entry) bool {
		return e.Dest != dest || (path != "" && e.Path != path && !strings.HasPrefix(e.Path, path+"/"))
	}), nil
}

// Drop takes ents out of the buffer as a delivery does (Release): each
// entry's index entry, record line and, once no entry uses it, object go
// in one index transaction, so that a kill leaves each file either carried
// or dropped, with records and index agreeing; dropping again finishes.
// It returns once all are applied, and fails if any is still carried.
func (b *Buffer) Drop(ents []Entry) error {
	for _, e := range ents {
		b.Release(e)
	}
	if err := b.Flush(); err != nil {
		return err
	}
	left, err := b.Entries()
	if err != nil {
		return err
	}
	gone := map[string]bool{}
	for _, e := range ents {
		gone[string(e.Key())] = true
	}
	if n := len(slices.DeleteFunc(left, func(e Entry) bool { return !gone[string(e.Key())] })); n > 0 {
		return fmt.Errorf("buffer %s: %d of %d file(s) still carried (see the log; drop again)", b.dir, n, len(ents))
	}
	return nil
}

// ErrLegacyRecord: an entry recorded by a messor older than batch record
// files cannot be readdressed (deliver or drop it).
var ErrLegacyRecord = errors.New("recorded by an older messor: deliver or drop it")

// Readdress gives ents the destination dest. Each entry's new record (its
// line naming the old destination in From) is committed in the same index
// transaction as the release of the old entry, so that a kill leaves
// either the old entry or the new one carried: the record written before a
// transaction cut off is adopted at the next open, and settleReaddress
// then releases the old entry there (as a recover does). The object is
// shared and never copied. An entry is delivered once, to dest.
func (b *Buffer) Readdress(ents []Entry, dest string) error {
	if b.ops == nil {
		return fmt.Errorf("buffer %s: opened read-only", b.dir)
	}
	var legacy []string
	b.db.View(func(tx *bolt.Tx) error {
		for _, e := range ents {
			if recOf(tx.Bucket(bucketEntries).Get(e.Key())) == "" {
				legacy = append(legacy, e.Path)
			}
		}
		return nil
	})
	if len(legacy) > 0 {
		return fmt.Errorf("buffer %s: %s: %w", b.dir, strings.Join(legacy, ", "), ErrLegacyRecord)
	}
	var ops []*op
	for _, e := range ents {
		ne := e
		ne.Dest, ne.From = dest, e.Dest
		com := &op{kind: opCommit, e: ne, done: make(chan opResult, 1)}
		ops = append(ops, com, &op{kind: opRelease, e: e, after: com, done: make(chan opResult, 1)})
	}
	// Queued together, under one lock: each pair lands in one batch,
	// the commit first, so the object never loses its last use.
	b.pmu.Lock()
	b.pending = append(b.pending, ops...)
	b.pmu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	var errs []error
	for _, o := range ops {
		if r := <-o.done; r.err != nil {
			errs = append(errs, r.err)
		}
	}
	return errors.Join(errs...)
}
