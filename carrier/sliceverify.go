package carrier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/messor-sync/messor/protocol"
)

// defaultVerifySlice is how many bytes of a big upload are verified at a
// time while it goes on (Options.VerifySlice). A file of fewer than two
// slices is verified whole after its last byte, as before.
//
// Why 32 MiB, and 64 MiB for the threshold: what the host still hashes after
// the last byte is one slice, at most 0.25 s on a Raspberry Pi (SHA-256 at
// ~150 MB/s) instead of ~30 s for a 4 GiB file. What a slice costs is one
// request (an agent) or one command on the host (a session, a shell, dd,
// head and the hash tool: 80-95 ms each on a busy 2-core test machine over
// loopback), one round trip where the upload's pipeline drains, and, on the
// carrier, the slice's SHA-256 (taken at pickup and kept, slicesums.go, or
// else a second pass over its copy). Those costs are hidden behind the
// upload as long as a slice takes longer to cross the link than to start a
// command: 32 MiB take a second and more over Wi-Fi, a quarter of a second
// over gigabit Ethernet; only over loopback (50 ms) does the host's work
// show. Below two slices nothing would overlap the upload, and the
// whole-file hash it replaces takes under half a second even on a Pi.
//
// The size is measured in file bytes, not in bytes left to send: a resumed
// upload of a big file would otherwise wait for the host to hash all of it
// after its last byte, however little was left.
const defaultVerifySlice = 32 << 20

// sliceAhead is how many slice hashes may be outstanding on the host while
// the upload goes on: the host hashes one slice while the next is written,
// and one more may wait; beyond that the upload waits for the host. With
// Options.BigWorkers (4) uploads at once, a stock host runs at most
// maxExecs commands for us anyway.
const sliceAhead = 2

// verifySlice returns the slice size in which to verify an upload of size
// bytes to s while it goes on, or 0 to verify it whole after the last byte:
// when sliceSize says so (slices on, a file of two slices or more), and
// where the host is known not to hash a slice for us (reading back, an
// agent that refused hash-slice).
//
// It does not wait for the host's probe (on a slow login shell, the exec
// helper's start and two commands: most of a second): the upload starts at
// once, and each slice asks whether the host can hash it once it is
// written (written); where it cannot, the whole file is verified after the
// last byte (TestSliceUploadNotWaitingForProbe).
func (c *Carrier) verifySlice(ctx context.Context, s *Session, size int64) int64 {
	n := c.sliceSize(size)
	if known, can := s.sliceAnswer(ctx); n == 0 || known && !can {
		return 0
	}
	return n
}

// sliceSize is the slice size in which a file of size bytes is verified
// (Options.VerifySlice), or 0 where it is verified whole: slices turned
// off, or a file smaller than two slices.
func (c *Carrier) sliceSize(size int64) int64 {
	n := c.opts.VerifySlice
	if n <= 0 || size < 2*n {
		return 0
	}
	return n
}

// planSlices cuts [off, size) into slices of n bytes, the first from the
// start of the protocol.HashBlock holding off (where dd starts on a stock
// host), the last cut at size.
func planSlices(off, size, n int64) []*sliceCheck {
	var out []*sliceCheck
	for a := off - off%protocol.HashBlock; a < size; a += n {
		out = append(out, &sliceCheck{start: a, end: min(a+n, size)})
	}
	return out
}

// sliceAnswer returns, without waiting for a probe, whether the probes
// have told if s hashes slices (known), and if so whether it does (can).
func (s *Session) sliceAnswer(ctx context.Context) (known, can bool) {
	if !s.capsKnown.Load() {
		return false, false
	}
	h := s.hostCaps.hasher
	if !h.sliceProbed() {
		return false, false
	}
	return true, h.canSlice(ctx, s)
}

// errNoSliceHash: the host turned out not to hash slices (the probe
// answered after the upload had started); the whole file is verified.
var errNoSliceHash = errors.New("the host cannot hash a slice")

// sliceCheck is one slice of a big upload: bytes [start, end) of the file,
// hashed on the host once written, and in the carrier's copy.
type sliceCheck struct {
	start, end int64
	host       []byte // the host's digest, once it answered
	local      []byte // the carrier's, once the local pass got there
	err        error  // the host's hash failed
}

// sliceVerifier verifies a big upload slice by slice while it goes on.
//
// The upload writes the slices in order; once one is written (its SFTP
// writes answered: the host's server has written the bytes), the host
// hashes it (written), at most sliceAhead at a time, while the next is
// being written. Meanwhile one goroutine (localPass) reads the carrier's
// copy once, in order, just behind the upload, and feeds every byte both to
// the hash of the whole file and to that of the slice it belongs to, so one
// read yields the digest to check against the content address and the
// digests to compare with the host's. Once every slice's digests agree and
// the whole digest is the content address, the host holds exactly the
// content. Following the upload rather than racing ahead, the pass wastes
// little work when the link drops (the next run starts a new pass), and
// does not take the CPU from the upload in one burst. Where the pickup
// kept the slices' digests (slicesums.go) a fresh upload has no local pass:
// the host's digests are compared with those.
//
// A resumed upload starts at off > 0. [0, off) was checked by resumePoint:
// the host's digest of it equalled that of the carrier's copy as read
// then, and resumePoint hands over that hash, positioned at off, for the
// whole-file hash to go on from: the bytes before off are not read again,
// and the whole digest is that of the very reading the host's prefix was
// compared with. The first slice begins at off rounded down to
// protocol.HashBlock (dd's block on a stock host), so it also covers up to
// 1 MiB before off, which the pass reads again for that slice's digest
// only: both readings were compared with the same bytes on the host.
//
// A slice is hashed after its writes were answered and before the fsync,
// as the whole file was hashed after the fsync: both read what the host's
// page cache holds. What a slice's hash cannot see is a later write landing
// in it (a server writing at the wrong offset); the writes of later slices
// are all at offsets past it.
type sliceVerifier struct {
	s       *Session
	partial string
	size    int64
	off     int64
	slices  []*sliceCheck

	ctx    context.Context
	cancel context.CancelFunc
	run    context.Context // the run's: the session's probes, which outlive this upload
	ahead  chan struct{}
	wg     sync.WaitGroup // host hashes outstanding
	waited time.Duration  // the upload, for the host to hash (written)

	sent  atomic.Int64  // how far the upload has read the carrier's copy
	moved chan struct{} // sent moved on

	kept bool // the local digests are those kept from pickup: no local pass

	mu        sync.Mutex
	whole     []byte // the carrier's copy: digest of all of it
	localErr  error
	localDone chan struct{}
}

// newSliceVerifier plans the slices of an upload of [off, size) in slices
// of n bytes and starts the local pass over obj; prefix is the hash of the
// carrier's copy of [0, off) that resumePoint matched with the host's (nil
// when off is 0). The upload must report what it reads (pace).
//
// kept are the digests of the content's slices kept from its pickup
// (slicesums.go), or nil. A fresh upload (off 0) compares the host's with
// them and reads nothing of the carrier's copy: they are digests of the
// very bytes whose SHA-256 is the content address.
func newSliceVerifier(ctx context.Context, s *Session, obj io.ReaderAt, partial string, size, off int64, prefix hash.Hash, n int64, kept [][]byte) *sliceVerifier {
	v := &sliceVerifier{s: s, partial: partial, size: size, off: off,
		ahead: make(chan struct{}, sliceAhead), moved: make(chan struct{}, 1), localDone: make(chan struct{})}
	v.ctx, v.cancel = context.WithCancel(ctx)
	v.run = ctx
	go s.canHashSlices(ctx) // probed while the first slice goes up
	v.sent.Store(off)
	v.slices = planSlices(off, size, n)
	if off == 0 && len(kept) == len(v.slices) {
		for i, sl := range v.slices {
			sl.local = kept[i]
		}
		v.kept = true
		close(v.localDone)
		return v
	}
	go v.localPass(obj, prefix)
	return v
}

// pace wraps the upload's tracker so that the local pass learns how far the
// upload has read.
func (v *sliceVerifier) pace(tr Tracker) Tracker { return pacer{tr, v} }

type pacer struct {
	Tracker
	v *sliceVerifier
}

func (p pacer) Add(n int64) {
	p.Tracker.Add(n)
	p.v.sent.Add(n)
	select {
	case p.v.moved <- struct{}{}:
	default:
	}
}

// localPass reads obj from the first slice's start to size, no further
// than the upload has read, hashing the whole (going on from prefix, at
// off) and each slice.
func (v *sliceVerifier) localPass(obj io.ReaderAt, prefix hash.Hash) {
	defer close(v.localDone)
	whole, part := prefix, sha256.New()
	if v.off == 0 {
		whole = sha256.New()
	}
	var err error
	if whole == nil {
		err = errors.New("no hash of the resumed prefix")
	}
	buf := make([]byte, 1<<20)
	pos := v.off
	if len(v.slices) > 0 {
		pos = v.slices[0].start
	}
	next := 0 // the slice being hashed
	for err == nil && pos < v.size {
		sent := v.sent.Load()
		if sent <= pos {
			select {
			case <-v.moved:
				continue
			case <-v.ctx.Done():
				err = v.ctx.Err()
				continue
			}
		}
		// Read up to the next place a digest is taken.
		n := min(int64(len(buf)), sent-pos)
		if pos < v.off {
			n = min(n, v.off-pos)
		}
		sl := v.slices[next]
		n = min(n, sl.end-pos)
		b := buf[:n]
		if _, err = obj.ReadAt(b, pos); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			err = fmt.Errorf("reading the carrier's copy at %d: %w", pos, err)
			continue
		}
		if pos >= v.off {
			whole.Write(b)
		}
		part.Write(b)
		pos += n
		if pos == sl.end {
			v.mu.Lock()
			sl.local = part.Sum(nil)
			v.mu.Unlock()
			part = sha256.New()
			next++
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		v.localErr = err
		return
	}
	v.whole = whole.Sum(nil)
}

// written starts the host's hash of slice i, which the upload has just
// written, once fewer than sliceAhead are outstanding. It returns ctx's
// error if the upload was cancelled meanwhile.
func (v *sliceVerifier) written(i int) error {
	sl := v.slices[i]
	if v.s.sliceRefused.Load() {
		v.mu.Lock()
		sl.err = errSliceRefused // the whole file will be verified
		v.mu.Unlock()
		return nil
	}
	if known, _ := v.s.sliceAnswer(v.run); !known {
		// The probe has not answered (a slow login shell): the upload
		// goes on, and the slice is hashed once it has.
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			v.s.canHashSlices(v.run)
			select {
			case v.ahead <- struct{}{}:
				v.hash(sl)
			case <-v.ctx.Done():
				v.mu.Lock()
				sl.err = fmt.Errorf("host %s: %s: %w", v.s.Host.Name, v.partial, v.ctx.Err())
				v.mu.Unlock()
			}
		}()
		return nil
	}
	t0 := time.Now()
	select {
	case v.ahead <- struct{}{}:
	case <-v.ctx.Done():
		return fmt.Errorf("host %s: %s: %w", v.s.Host.Name, v.partial, v.ctx.Err())
	}
	v.waited += time.Since(t0)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		v.hash(sl)
	}()
	return nil
}

// hash has the host hash slice sl, holding one of v.ahead, which it gives
// back.
func (v *sliceVerifier) hash(sl *sliceCheck) {
	defer func() { <-v.ahead }()
	if !v.s.canHashSlices(v.run) {
		v.mu.Lock()
		sl.err = errNoSliceHash // the whole file will be verified
		v.mu.Unlock()
		return
	}
	sum, err := v.s.hashSlice(v.ctx, v.partial, sl.start, sl.end-sl.start)
	v.mu.Lock()
	sl.host, sl.err = sum, err
	v.mu.Unlock()
}

// mismatch describes the first slice whose host digest is known to differ
// from the carrier's, or is "".
func (v *sliceVerifier) mismatch() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	here := "here"
	if v.kept {
		here = "kept from its pickup"
	}
	for _, sl := range v.slices {
		if sl.host != nil && sl.local != nil && !bytes.Equal(sl.host, sl.local) {
			return fmt.Sprintf("bytes %d to %d: sha256 %x on the host, %x %s", sl.start, sl.end, sl.host, sl.local, here)
		}
	}
	return ""
}

// verdict waits for every hash, here and on the host, and judges the upload
// written in full to the partial: bad describes a difference (the partial
// holds other bytes than the content); whole asks for the whole file to be
// verified instead (the agent refused a slice, or the host turned out not to
// hash one); err is a failure to tell (a host hash failed, the local copy
// could not be read).
func (v *sliceVerifier) verdict(want []byte) (bad string, whole bool, err error) {
	v.wg.Wait()
	<-v.localDone
	if bad := v.mismatch(); bad != "" {
		return bad, false, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.localErr != nil {
		return "", false, fmt.Errorf("buffer: the carrier's copy of %s for host %s: %w", v.partial, v.s.Host.Name, v.localErr)
	}
	if !v.kept && !bytes.Equal(v.whole, want) {
		return fmt.Sprintf("the carrier's copy reads as sha256 %x, want %x: damaged in the buffer?", v.whole, want), false, nil
	}
	for _, sl := range v.slices {
		if errors.Is(sl.err, errSliceRefused) || errors.Is(sl.err, errNoSliceHash) {
			whole = true
		} else if sl.err != nil {
			return "", false, sl.err
		} else if sl.host == nil {
			return "", false, fmt.Errorf("host %s: %s: bytes %d to %d were not verified", v.s.Host.Name, v.partial, sl.start, sl.end)
		}
	}
	return "", whole, nil
}

// stop cancels what is still going on and waits for it to end. It may be
// called more than once.
func (v *sliceVerifier) stop() {
	v.cancel()
	v.wg.Wait()
	<-v.localDone
}
