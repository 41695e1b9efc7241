package carrier

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/messor-sync/messor/protocol"
)

// A host may stop answering SFTP requests while its SSH connection stays
// healthy: sftp-server blocked in open(2) on a FIFO, or on a hung NFS
// mount, or a hostile server that answers keepalives and nothing else.
// Bytes on the connection then say nothing; every SFTP request gets
// exactly one reply, so sftpWatch counts, per SFTP channel, the requests
// written and the replies read, and the idle watch (watchIdle) gives up on
// a session one of whose channels has had requests outstanding and no
// reply byte for the idle timeout while our side waited for one
// (TestStallFIFOInOutbox, TestStallHostStopsAnswering).

// SFTP packet types the watch reads (draft-ietf-secsh-filexfer-02).
const (
	fxpInit     = 1
	fxpVersion  = 2
	fxpClose    = 4
	fxpWrite    = 6
	fxpHandle   = 102
	fxpData     = 103
	fxpExtended = 200
)

// fxpNames names the requests in a stall's error.
var fxpNames = map[byte]string{1: "init", 3: "open", 4: "close", 5: "read", 6: "write", 7: "lstat", 8: "fstat",
	9: "setstat", 10: "fsetstat", 11: "opendir", 12: "readdir", 13: "remove", 14: "mkdir", 15: "rmdir",
	16: "realpath", 17: "stat", 18: "rename", 19: "readlink", 20: "symlink", 200: "extended"}

// fxpByHandle: the requests whose first argument is a handle, not a path.
var fxpByHandle = map[byte]bool{4: true, 5: true, 6: true, 8: true, 10: true, 12: true}

// sftpWatch follows one SFTP channel. It is fed what the client writes
// (sent) and what it reads (read), and tells whether the channel stalled.
type sftpWatch struct {
	mu      sync.Mutex
	pending map[uint32]pendingReq // by request id; init under initID
	handles map[string]string     // handle -> the path opened
	written map[string]int64      // handle -> bytes written since its last fsync
	waiting bool                  // our reader is blocked in a read
	mark    time.Time             // the last sign of life; see stalled
	closed  bool
	out, in framer
	shared  *sftpShared
}

// sftpShared is what the watches of one session's SFTP channels share.
type sftpShared struct {
	unsynced atomic.Int64 // bytes written since a directory sync
	// lastByte is when a byte last came on any of them: over a slow
	// link one channel's reply may wait behind another's data.
	lastByte monoStamp
}

// pendingReq is a request without its reply: what it is, when it was
// sent, and for an fsync how much longer than twice the idle timeout the
// host may take over it (syncTime).
type pendingReq struct {
	what  string
	since time.Time
	sync  bool
	allow time.Duration
}

// initID keys SSH_FXP_INIT, which has no request id.
const initID = 1<<32 - 1

// newSFTPWatch returns a channel's watch sharing sh with the session's
// other channels (nil: its own, until the session's is set).
func newSFTPWatch(sh *sftpShared) *sftpWatch {
	if sh == nil {
		sh = &sftpShared{}
	}
	return &sftpWatch{pending: map[uint32]pendingReq{}, handles: map[string]string{}, written: map[string]int64{},
		mark: time.Now(), shared: sh}
}

// syncTime is how much longer than twice the idle timeout a host may take
// over an fsync after n bytes were written: a second per 5 MiB (a slow SD
// card). The idle timeout twice: a disk's flush is the one request that
// takes long on a host that is well (TestStallSlowFsync).
func syncTime(n int64) time.Duration {
	return time.Duration(n/(5<<20)) * time.Second
}

// sent sees bytes the client writes to the channel.
func (w *sftpWatch) sent(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out.feed(p, w.request)
}

// readStart and readEnd bracket a read of the channel by the client.
func (w *sftpWatch) readStart() {
	w.mu.Lock()
	// Only the time our reader waits counts: a client slow to take the
	// replies (our disk, our hashing) is not a host that stalled.
	w.waiting, w.mark = true, time.Now()
	w.mu.Unlock()
}

func (w *sftpWatch) readEnd(p []byte, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting = false
	if len(p) > 0 {
		w.mark = time.Now()
		if len(w.pending) > 0 {
			// Only a reply asked for is life for the other channels: a
			// host trickling bytes nobody asked for on an idle channel
			// must not keep a stalled one going
			// (TestSFTPWatchTrickleElsewhere).
			w.shared.lastByte.set(w.mark)
		}
		w.in.feed(p, w.reply)
	}
	if err != nil {
		w.closed = true
	}
}

// retire stops the watch: the channel is closed or given up.
func (w *sftpWatch) retire() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// stalled reports whether the channel has had requests outstanding and no
// reply byte, on it or on another of the session's channels, for idle
// while our reader waited (longer while an fsync is outstanding: see
// syncTime; and never before busy), and names the oldest request waited on.
func (w *sftpWatch) stalled(now time.Time, idle time.Duration, busy time.Time) (what string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || !w.waiting || len(w.pending) == 0 {
		return "", false
	}
	until := later(later(w.mark, w.shared.lastByte.time()).Add(idle), busy)
	var oldest pendingReq
	for _, p := range w.pending {
		if oldest.since.IsZero() || p.since.Before(oldest.since) {
			oldest = p
		}
	}
	if now.Before(later(until, w.syncEnd(idle))) {
		return "", false
	}
	return oldest.what, true
}

// syncEnd is when the channel's fsyncs outstanding run out of time (zero
// with none). Until then the host's disk is busy flushing, and the
// session's other channels may wait behind it too
// (TestSFTPWatchSyncOnOtherLane). w.mu is held.
func (w *sftpWatch) syncEnd(idle time.Duration) time.Time {
	var end time.Time
	if w.closed {
		return end
	}
	for _, p := range w.pending {
		// An fsync queued behind another starts when that one ends.
		if p.sync {
			end = later(end, later(p.since, w.mark).Add(2*idle+p.allow))
		}
	}
	return end
}

// flushing is syncEnd, for the session's other channels.
func (w *sftpWatch) flushing(idle time.Duration) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.syncEnd(idle)
}

// request notes one request the client sent (head: its first bytes).
func (w *sftpWatch) request(head []byte, size int) {
	now := time.Now()
	if len(w.pending) == 0 {
		// The clock starts with the first request after a quiet spell.
		w.mark = now
	}
	if head[0] == fxpInit {
		w.pending[initID] = pendingReq{what: "init", since: now}
		return
	}
	id, rest, ok := getU32(head[1:])
	if !ok {
		return
	}
	p := pendingReq{what: fxpNames[head[0]], since: now}
	if p.what == "" {
		p.what = fmt.Sprintf("request type %d", head[0])
	}
	arg, rest, _ := protocol.CutString(rest)
	switch {
	case head[0] == fxpExtended:
		name := string(arg)
		p.what = name
		arg, _, _ = protocol.CutString(rest)
		if name == "fsync@openssh.com" {
			p.what = "fsync " + w.handles[string(arg)]
			n := w.written[string(arg)]
			delete(w.written, string(arg))
			if n == 0 {
				// A directory's sync: what the session wrote since the
				// last one may be flushed with it.
				n = w.shared.unsynced.Swap(0)
			}
			p.sync, p.allow = true, syncTime(n)
		} else {
			p.what += " " + string(arg)
		}
	case fxpByHandle[head[0]]:
		p.what += " " + w.handles[string(arg)]
		if head[0] == fxpClose {
			delete(w.handles, string(arg))
			delete(w.written, string(arg))
		}
		if head[0] == fxpWrite {
			if _, rest, ok := getU64(rest); ok {
				if n, _, ok := getU32(rest); ok {
					w.written[string(arg)] += int64(n)
					w.shared.unsynced.Add(int64(n))
				}
			}
		}
	default:
		p.what += " " + string(arg)
	}
	w.pending[id] = p
}

// reply notes one reply the host sent (head: its first bytes).
func (w *sftpWatch) reply(head []byte, size int) {
	if head[0] == fxpVersion {
		delete(w.pending, initID)
		return
	}
	id, rest, ok := getU32(head[1:])
	if !ok {
		return
	}
	p, ok := w.pending[id]
	delete(w.pending, id)
	if h, _, hok := protocol.CutString(rest); ok && hok && head[0] == fxpHandle {
		// "open p" or "opendir p": the handle's later requests name p.
		if _, path, cut := strings.Cut(p.what, " "); cut {
			w.handles[string(h)] = path
		}
	}
}

// monoStamp is when something last happened (a byte came), for the idle
// watch: set and read from any goroutine without a lock, and kept on the
// monotonic clock, so it never jumps with the wall clock (a carrier whose
// clock NTP sets right after boot, a laptop resumed from suspend). The
// zero value is the process's start.
type monoStamp struct{ n atomic.Int64 } // since monoBase

var monoBase = time.Now()

func (m *monoStamp) set(t time.Time)      { m.n.Store(int64(t.Sub(monoBase))) }
func (m *monoStamp) touch()               { m.set(time.Now()) }
func (m *monoStamp) time() time.Time      { return monoBase.Add(time.Duration(m.n.Load())) }
func (m *monoStamp) since() time.Duration { return time.Since(m.time()) }

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func getU32(b []byte) (uint32, []byte, bool) {
	if len(b) < 4 {
		return 0, b, false
	}
	return binary.BigEndian.Uint32(b), b[4:], true
}

func getU64(b []byte) (uint64, []byte, bool) {
	if len(b) < 8 {
		return 0, b, false
	}
	return binary.BigEndian.Uint64(b), b[8:], true
}

// framer splits a byte stream into SFTP packets (a uint32 length, then
// that many bytes, the first a type), in whatever pieces it comes, and
// hands each packet's head (its first bytes: type, id, a path or handle)
// to a function once it is whole.
type framer struct {
	lenBuf [4]byte
	nLen   int    // bytes of the length gathered
	left   int64  // bytes of the packet still to come
	size   int64  // the packet's length
	head   []byte // its first bytes, up to headLen
	done   bool   // head handed on
}

// headLen is how much of a packet the watch reads: enough for a path; a
// write's or data reply's content is passed over.
func headLen(typ byte, size int64) int64 {
	switch typ {
	case fxpWrite:
		return min(size, 1+4+4+256+8+4)
	case fxpData:
		return min(size, 1+4)
	}
	return min(size, 8<<10)
}

func (f *framer) feed(p []byte, packet func(head []byte, size int)) {
	for len(p) > 0 {
		if f.nLen < 4 {
			k := copy(f.lenBuf[f.nLen:], p)
			f.nLen, p = f.nLen+k, p[k:]
			if f.nLen == 4 {
				f.size = int64(binary.BigEndian.Uint32(f.lenBuf[:]))
				f.left, f.head, f.done = f.size, f.head[:0], f.size == 0
			}
			if f.nLen == 4 && f.left == 0 {
				f.nLen = 0
			}
			continue
		}
		k := min(int64(len(p)), f.left)
		if !f.done {
			want := int64(1)
			if len(f.head) > 0 {
				want = headLen(f.head[0], f.size)
			}
			take := min(k, want-int64(len(f.head)))
			f.head = append(f.head, p[:take]...)
			if int64(len(f.head)) >= headLen(f.head[0], f.size) {
				f.done = true
				packet(f.head, int(f.size))
			}
			// The rest of this piece is read below, by the next turn.
			p, f.left = p[take:], f.left-take
		} else {
			p, f.left = p[k:], f.left-k
		}
		if f.left == 0 {
			f.nLen = 0
		}
	}
}

// watchedReader is the client's side of a channel's replies, fed to w.
type watchedReader struct {
	r io.Reader
	w *sftpWatch
}

func (r watchedReader) Read(p []byte) (int, error) {
	r.w.readStart()
	n, err := r.r.Read(p)
	r.w.readEnd(p[:n], err)
	return n, err
}

// lifeReader is a stream the host sends besides the SFTP channels (the
// exec helper's output: a batch's archive): its bytes, like a reply's,
// show the link delivering what waits behind them
// (TestStallBatchOverSlowLink).
type lifeReader struct {
	r  io.Reader
	sh *sftpShared
}

func (l lifeReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.sh.lastByte.touch()
	}
	return n, err
}

// watchedWriter is the client's side of a channel's requests, fed to w.
type watchedWriter struct {
	wc io.WriteCloser
	w  *sftpWatch
}

func (ww watchedWriter) Write(p []byte) (int, error) {
	ww.w.sent(p)
	return ww.wc.Write(p)
}

func (ww watchedWriter) Close() error { return ww.wc.Close() }
