package carrier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"
)

// sourceCheck proves a big download equal to its source on the host slice
// by slice while it streams, so that what is left to hash after the last
// byte is one slice (and a resumed download's prefix), not the whole file
// read a second time.
//
// The stream's bytes reach Write in order (through the download's async
// hash, after the partial was written). When a slice's last byte has
// arrived, its digest here is final and the host is asked for the digest
// of the same bytes of the source (hashSlice), at most sliceAhead at a
// time: the host reads every slice after the carrier received it, and a
// slice changed in place before that hash (its mtime restored or not) does
// not verify. A resumed download's prefix, read on an earlier visit, is
// hashed on the host again after this visit's last byte (verdict), as the
// whole file was before: a change to it while the rest streams is seen.
//
// What a slice's hash cannot see is a change to it after the host hashed
// it with the source's mtime kept (the size and mtime checked after the
// read see any other): the whole-file hash after the last byte saw such a
// change made before it ran.
type sourceCheck struct {
	s      *Session
	remote string
	from   int64  // where this run's read starts
	prefix []byte // the partial's digest of [0, from), which the host's matched before the read
	slices []*sliceCheck

	ctx    context.Context
	cancel context.CancelFunc
	ahead  chan struct{}
	wg     sync.WaitGroup // host hashes outstanding

	// Written by Write only (one goroutine).
	pos    int64 // the offset of the next byte Write gets
	next   int   // the slice being hashed here
	part   hash.Hash
	waited time.Duration // the stream, for the host to hash

	mu  sync.Mutex
	err error // the stream's check cannot go on (cancelled, the partial unreadable)
}

// newSourceCheck returns a check of the download of remote (size bytes,
// read from from on; lf the partial) in slices, or nil where the source is
// not hashed on the host (a fresh download from a stock host) or not in
// slices (a file of fewer than two, a host that cannot hash a slice): then
// verifySource checks the whole after the read, as it decides. h is the
// hash of the partial's [0, from), positioned at from.
func (c *Carrier) newSourceCheck(ctx context.Context, s *Session, remote string, size, from int64, h hash.Hash, lf io.ReaderAt) *sourceCheck {
	resumed := from > 0 && from < size
	// s.agent is known from the handshake: a fresh download from a stock
	// host does not wait here for the host's probe. A partial that holds
	// the whole file has nothing left to stream: verifySource decides.
	if from >= size || !resumed && !(c.opts.VerifySource && s.agent) {
		return nil
	}
	n := c.verifySlice(ctx, s, size)
	if n == 0 {
		return nil
	}
	v := &sourceCheck{s: s, remote: remote, from: from, ahead: make(chan struct{}, sliceAhead), part: sha256.New()}
	if resumed {
		v.prefix = h.Sum(nil)
	}
	v.ctx, v.cancel = context.WithCancel(ctx)
	v.slices = planSlices(from, size, n)
	// The first slice begins at a block's start (dd's, on a stock host):
	// its bytes before from are the partial's, whose prefix the host
	// hashed the same.
	start := v.slices[0].start
	v.pos = start
	if _, err := io.Copy(v, io.NewSectionReader(lf, start, from-start)); err != nil {
		v.fail(fmt.Errorf("buffer: reading the partial of %s: %w", remote, err))
	}
	return v
}

// tee returns h with the check fed the same bytes, or h where there is no
// check.
func (v *sourceCheck) tee(h io.Writer) io.Writer {
	if v == nil {
		return h
	}
	return io.MultiWriter(h, v)
}

// digests returns the carrier's digests of every slice of a fresh download
// (slices from 0), once the stream is done, or nil.
func (v *sourceCheck) digests() [][]byte {
	if v == nil || v.from != 0 {
		return nil
	}
	var d [][]byte
	for _, sl := range v.slices {
		if sl.local == nil {
			return nil
		}
		d = append(d, sl.local)
	}
	return d
}

// Write hashes the next bytes of the stream into their slices, and starts
// the host's hash of each slice it completes. It never fails the stream: a
// check that cannot go on says so in verdict.
func (v *sourceCheck) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && v.next < len(v.slices) && v.failed() == nil {
		sl := v.slices[v.next]
		k := min(int64(len(p)), sl.end-v.pos)
		v.part.Write(p[:k])
		v.pos += k
		p = p[k:]
		if v.pos == sl.end {
			sl.local = v.part.Sum(nil)
			v.part.Reset()
			v.next++
			v.hostHash(sl)
		}
	}
	return total, nil
}

// hostHash asks the host for the digest of sl once fewer than sliceAhead
// are outstanding.
func (v *sourceCheck) hostHash(sl *sliceCheck) {
	t0 := time.Now()
	select {
	case v.ahead <- struct{}{}:
	case <-v.ctx.Done():
		v.fail(v.ctx.Err())
		return
	}
	v.waited += time.Since(t0)
	if v.s.sliceRefused.Load() {
		<-v.ahead
		v.mu.Lock()
		sl.err = errSliceRefused // the whole file will be hashed
		v.mu.Unlock()
		return
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		defer func() { <-v.ahead }()
		sum, err := v.s.hashSlice(v.ctx, v.remote, sl.start, sl.end-sl.start)
		v.mu.Lock()
		sl.host, sl.err = sum, err
		v.mu.Unlock()
	}()
}

func (v *sourceCheck) fail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err == nil {
		v.err = err
	}
}

func (v *sourceCheck) failed() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// verdict waits for the host's hashes of a download read in full, and of
// a resumed download's prefix, hashed now. errChanged where one differs
// from the carrier's; whole asks for the whole file to be hashed instead
// (the agent refused a slice, no session was free for a command); err is a
// failure to tell (the link dropped).
func (v *sourceCheck) verdict() (whole bool, err error) {
	var prefix []byte
	var perr error
	if v.prefix != nil {
		prefix, perr = v.s.hashPrefix(v.ctx, v.remote, v.from)
	}
	v.wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return false, fmt.Errorf("host %s: verifying %s: %w", v.s.Host.Name, v.remote, v.err)
	}
	if v.next != len(v.slices) {
		return false, fmt.Errorf("host %s: verifying %s: bytes %d on were not read", v.s.Host.Name, v.remote, v.pos)
	}
	for _, sl := range v.slices {
		if sl.err == nil && !bytes.Equal(sl.host, sl.local) {
			v.s.log.Info("the source changed while read", "host", v.s.Host.Name, "path", v.remote,
				"bytes", fmt.Sprintf("%d-%d", sl.start, sl.end), "host_sha256", hex.EncodeToString(sl.host), "read_sha256", hex.EncodeToString(sl.local))
			return false, errChanged
		}
	}
	if perr == nil && prefix != nil && !bytes.Equal(prefix, v.prefix) {
		v.s.log.Info("the source's start changed while the rest was read", "host", v.s.Host.Name, "path", v.remote, "bytes", v.from)
		return false, errChanged
	}
	for _, sl := range v.slices {
		if errors.Is(sl.err, errSliceRefused) {
			whole = true
		} else if sl.err != nil {
			return false, sl.err
		}
	}
	if perr != nil {
		if v.ctx.Err() != nil {
			return false, perr
		}
		// The whole file, as verifySource hashes it, reading back
		// where no command can run.
		v.s.log.Debug("cannot hash the resumed prefix on the host again", "host", v.s.Host.Name, "path", v.remote, "err", perr)
		whole = true
	}
	return whole, nil
}

// stop cancels the host hashes still going on and waits for them. It may
// be called more than once, and on a nil check.
func (v *sourceCheck) stop() {
	if v == nil {
		return
	}
	v.cancel()
	v.wg.Wait()
}

// checkSource proves a download read in full equal to its source, with
// sum its content's digest: slice by slice (v, where there is one), else
// as verifySource decides.
func (c *Carrier) checkSource(ctx context.Context, s *Session, v *sourceCheck, remote string, size int64, sum string, resumed bool) error {
	if v != nil {
		t0 := time.Now()
		whole, err := v.verdict()
		if err != nil || !whole {
			c.log.Debug("source check", "host", s.Host.Name, "path", remote, "verify", fmt.Sprintf("%d slices", len(v.slices)),
				"after_last_byte", time.Since(t0).Round(time.Millisecond), "read_waited_for_host", v.waited.Round(time.Millisecond), "err", err)
			return err
		}
		c.log.Debug("the host refused to hash a slice of the source; hashing it whole", "host", s.Host.Name, "path", remote)
	}
	return c.verifySource(ctx, s, remote, size, sum, resumed)
}
