package carrier

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/messor-sync/messor/protocol"
)

// Small files in batches: on a stock host whose exec helper is up, a
// pickup of many small files reads them as tar archives, one command in
// the helper per batch (protocol/doc.go, "Reading small files in
// batches"), instead of an SFTP open, read and close per file. A member is
// taken only where it is a regular file named as asked, with the size and
// mtime it was listed with; each is then checked, committed and removed
// exactly as fetchSmall's file is (keepSmall: the host's lstat after the
// read, the commit, the claim). Whatever the archive does not bring so
// (missing, rewritten, changed, a torn stream, no tar on the host) is read
// by itself afterwards, by fetch.

const (
	batchFileMax  = 64 << 10  // the largest file read in a batch
	batchMaxFiles = 512       // files per archive
	batchMaxBytes = 4 << 20   // listed bytes per archive
	batchMaxNames = 128 << 10 // bytes of names on one command line
	// batchInFlight bounds the members received and not yet committed
	// (at most batchInFlight * batchFileMax bytes held).
	batchInFlight = 1024
)

// batchCapsWait is how long a run waits for the exec helper's first
// answer before reading its small files one by one.
var batchCapsWait = 5 * time.Second

// batchIdle is how long an archive may send nothing before the helper is
// taken for stuck and closed. Tests shorten it.
var batchIdle = 30 * time.Second

// batchMin is the fewest small files a run reads in batches: below it the
// wait for the helper (its shell's start on a slow login) costs more than
// the round trips it saves. Tests lower it.
var batchMin = manyFiles

// batches is a run's archive reads: each batched file has a slot, given
// its member once its archive ended well, or left empty for a read by
// itself. A slot leaves slots when its file takes it, and a group when
// its archive is settled, so what a visit holds shrinks as it goes
// (TestBatchHeapPerFile).
type batches struct {
	s      *Session
	h      *execHelper
	dir    string // the host's outbox, absolute
	groups []*batchGroup
	mu     sync.Mutex
	slots  map[string]*batchSlot // by the member name asked for
	tokens chan struct{}         // members held, bounded by batchInFlight
	cancel context.CancelFunc
	done   chan struct{}
}

// batchGroup is the files of one archive; ready is closed once each of
// their slots is settled.
type batchGroup struct {
	slots []*batchSlot
	ready chan struct{}
}

// batchSlot is one batched file, as listed: data once its member came as
// listed; nil data means it is read by itself.
type batchSlot struct {
	name  string // the member name asked for
	size  int64
	mtime int64 // unix seconds
	g     *batchGroup
	data  []byte
}

// take removes name's slot from slots and returns it.
func (bt *batches) take(name string) *batchSlot {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	sl := bt.slots[name]
	delete(bt.slots, name)
	return sl
}

// liveExecHasher waits for the session's probe (started with the visit; a
// host whose commands hang is not waited for beyond batchCapsWait) and
// returns its exec hasher when its helper is up; nil otherwise.
func (s *Session) liveExecHasher(ctx context.Context) *execHasher {
	caps := make(chan *hostCaps, 1)
	go func() { caps <- s.caps(ctx) }()
	select {
	case hc := <-caps:
		if e, ok := hc.hasher.(*execHasher); ok && e.helper != nil && e.helper.gone() == nil {
			return e
		}
	case <-time.After(batchCapsWait):
	case <-ctx.Done():
	}
	return nil
}

// startBatches starts reading take's small files in archives, in take's
// order, when the host's exec helper is up and there are at least
// batchMin of them; nil otherwise (every file is read by itself).
func (c *Carrier) startBatches(ctx context.Context, s *Session, take []candidate) *batches {
	var small []candidate
	for _, cd := range take {
		if cd.Size > batchFileMax {
			continue
		}
		if _, err := os.Lstat(c.buf.PartialPath(cd.origin(s.Host.Name))); errors.Is(err, fs.ErrNotExist) {
			small = append(small, cd)
		}
	}
	if len(small) < batchMin {
		return nil
	}
	e := s.liveExecHasher(ctx)
	if e == nil {
		return nil
	}
	bctx, cancel := context.WithCancel(ctx)
	bt := &batches{s: s, h: e.helper, dir: path.Join(e.dir, protocol.Outbox), slots: map[string]*batchSlot{},
		tokens: make(chan struct{}, batchInFlight), cancel: cancel, done: make(chan struct{})}
	g := &batchGroup{ready: make(chan struct{})}
	var bytes, names int64
	for _, cd := range small {
		name := path.Join(cd.Dest, cd.Path)
		if len(g.slots) > 0 && (len(g.slots) >= batchMaxFiles || bytes+cd.Size > batchMaxBytes || names+int64(len(name)) > batchMaxNames) {
			bt.groups = append(bt.groups, g)
			g, bytes, names = &batchGroup{ready: make(chan struct{})}, 0, 0
		}
		sl := &batchSlot{name: name, size: cd.Size, mtime: cd.MTime.Unix(), g: g}
		bt.slots[name] = sl
		g.slots = append(g.slots, sl)
		bytes += cd.Size
		names += int64(len(name)) + 8
	}
	bt.groups = append(bt.groups, g)
	go bt.run(bctx)
	return bt
}

// stop waits for the reads to end: the last archive's tail may still be
// on its way when its last member is committed (cancelling it then would
// close the helper). Where ctx ended, the reads are cut short. Every slot
// is settled by then.
func (bt *batches) stop(ctx context.Context) {
	if bt == nil {
		return
	}
	select {
	case <-bt.done:
	case <-ctx.Done():
	}
	bt.cancel()
	<-bt.done
}

// fetchOne carries cd: from its batch's member where it came as listed,
// else by itself (fetch). A batched file whose member did not come so is
// read by itself only while lstat shows it as listed: it may have become
// a FIFO, whose open would block the host's sftp-server (and with it the
// session, its keepalives still answered by sshd).
func (c *Carrier) fetchOne(ctx context.Context, bt *batches, s *Session, cd candidate, tr Tracker) (fetchResult, error) {
	data, batched := bt.wait(ctx, cd)
	if data != nil {
		defer func() { <-bt.tokens }()
		return c.keepBatched(ctx, s, cd, data, tr)
	}
	if batched {
		remote := path.Join(protocol.OutboxDir(cd.Dest), cd.Path)
		if err := sameVersion(func() (fs.FileInfo, error) { return s.sftp.Lstat(remote) }, cd); err != nil {
			return fetchResult{}, err
		}
	}
	return c.fetch(ctx, s, cd, tr)
}

// wait returns cd's member, once its archive has been read (nil
// where it did not come as listed); batched is false where cd is not in
// a batch.
func (bt *batches) wait(ctx context.Context, cd candidate) (data []byte, batched bool) {
	if bt == nil {
		return nil, false
	}
	sl := bt.take(path.Join(cd.Dest, cd.Path))
	if sl == nil {
		return nil, false
	}
	select {
	case <-sl.g.ready:
	case <-ctx.Done():
		return nil, true
	}
	return sl.data, true
}

// keepBatched commits a file whose bytes came in an archive, as
// fetchSmall does one it read.
func (c *Carrier) keepBatched(ctx context.Context, s *Session, cd candidate, data []byte, tr Tracker) (fetchResult, error) {
	if !c.buf.Reserve(cd.Size, 0) {
		return fetchResult{}, errNoRoom
	}
	tr.Add(int64(len(data)))
	res, err := c.keepSmall(ctx, s, cd, cd.origin(s.Host.Name), path.Join(protocol.OutboxDir(cd.Dest), cd.Path), data)
	if err != nil {
		c.buf.Unreserve(cd.Size, 0)
	}
	return res, err
}

// run reads the archives one after the other. After one that failed
// (the helper is gone) or brought nothing with the archiver failing (no
// tar on the host), the files left are read by themselves.
func (bt *batches) run(ctx context.Context) {
	defer close(bt.done)
	off := false
	for i, g := range bt.groups {
		if !off && ctx.Err() == nil {
			got, status, err := bt.read(ctx, g.slots)
			bt.s.log.Debug("batch read", "files", len(g.slots), "got", got, "status", status, "err", err)
			// The helper is gone, or the host cannot archive (no
			// tar): the files left are read by themselves.
			off = err != nil || got == 0 && status != 0
		}
		close(g.ready)
		bt.groups[i] = nil // its slots stay only until their files take them
	}
}

// read reads one archive of the files in g; got counts the members that
// came as listed. Their slots are filled only once the archiver exited
// with status 0: a tar that read a file shrinking under it pads its member
// with zeros (GNU tar: "File shrank", status 1), and one that saw a file
// change while read warns the same way; such an archive's members are
// all read again by themselves, as are those of a stream holding bytes
// no archiver wrote (archiveEnd).
func (bt *batches) read(ctx context.Context, g []*batchSlot) (got int, status int, err error) {
	names := make([]string, len(g))
	asked := make(map[string]*batchSlot, len(g))
	var limit int64 = 128 << 10
	for i, sl := range g {
		names[i] = sl.name
		asked[sl.name] = sl
		// Each member: a header, GNU or pax long-name records, its
		// content padded to a block.
		limit += 3*512 + 2*int64(len(names[i])) + (sl.size+511)/512*512
	}
	came := map[*batchSlot][]byte{}
	status, err = bt.h.stream(ctx, protocol.BatchCommand(bt.dir, names), limit, func(r io.Reader) error {
		cr := &countingReader{r: r}
		if err := members(cr, asked, came); err != nil {
			return err
		}
		return archiveEnd(r, cr.n)
	})
	if err != nil || status != 0 {
		return len(came), status, err
	}
	for _, sl := range g {
		data, ok := came[sl]
		if !ok {
			continue
		}
		select {
		case bt.tokens <- struct{}{}:
		case <-ctx.Done():
			return len(came), status, ctx.Err()
		}
		sl.data = data // published by the close of the group's ready
	}
	return len(came), status, nil
}

// members reads a tar archive from r into came: the content of each
// member asked for (in asked, by name) that is a regular file of its listed size and mtime,
// the first of its name. Anything else (a name not asked for, another
// type, size or mtime, a second copy) is passed over, its content unread.
func members(r io.Reader, asked map[string]*batchSlot, came map[*batchSlot][]byte) error {
	tr := tar.NewReader(r)
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		sl := asked[strings.TrimPrefix(hd.Name, "./")]
		if sl == nil || hd.Typeflag != tar.TypeReg || hd.Size != sl.size || hd.ModTime.Unix() != sl.mtime {
			continue
		}
		if _, dup := came[sl]; dup {
			continue
		}
		data := make([]byte, hd.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			return err
		}
		came[sl] = data
	}
}

// errArchiveNoise: an archive stream holding bytes no archiver wrote
// (another writer on the helper's output, such as a job the login shell
// left in the background): none of its members can be trusted.
var errArchiveNoise = errors.New("archive stream holds bytes no archiver wrote")

// archiveEnd reads what follows an archive's end (n bytes read so far)
// up to the newline before the reply's status line: zeros only (the
// archiver's padding, dd's blocks), the whole a number of whole blocks,
// as every archiver writes. Bytes inserted in a member whose end is zeros
// still parse as an archive; this finds them unless they are whole
// blocks of zeros or a multiple of 512 bytes.
func archiveEnd(r io.Reader, n int64) error {
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		if b[0] == '\n' {
			break
		}
		if b[0] != 0 {
			return errArchiveNoise
		}
		n++
	}
	if n%512 != 0 {
		return errArchiveNoise
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// stream runs cmd in the helper, handing its standard output to read as
// it comes; status is cmd's exit status. The reply is framed by lines of
// the helper's marker: "<marker> <seq> start" before the output, and
// after it two zero blocks (an archiver that wrote nothing reads as an
// empty archive) and "<marker> <seq> <status>". read must consume the
// output up to its end (a tar archive's end: what follows is padding).
// More than limit bytes, batchIdle without a byte, ctx's end, or read
// failing close the helper: its reply's state is unknown.
func (h *execHelper) stream(ctx context.Context, cmd string, limit int64, read func(io.Reader) error) (int, error) {
	select {
	case h.turn <- struct{}{}:
		defer func() { <-h.turn }()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if err := h.gone(); err != nil {
		return 0, err
	}
	h.seq++
	tag := h.marker + " " + strconv.Itoa(h.seq)
	line := "printf '%s\\n' '" + tag + " start'; ( " + cmd + " ) </dev/null 2>/dev/null; messor_st=$?; " +
		"dd if=/dev/zero bs=512 count=2 2>/dev/null; printf '\\n%s %s\\n' '" + tag + "' \"$messor_st\"\n"
	type reply struct {
		status int
		err    error
	}
	lr := &streamReader{r: h.out, left: limit}
	lr.touch()
	done := make(chan reply, 1)
	go func() {
		st, err := h.streamReply(line, tag, lr, read)
		done <- reply{st, err}
	}()
	tick := time.NewTicker(batchIdle / 10)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			if r.err != nil {
				h.close(fmt.Errorf("%w: %w", errHelperDead, r.err))
				return 0, h.gone()
			}
			return r.status, nil
		case <-ctx.Done():
			return 0, h.fail(ctx, ctx.Err())
		case <-tick.C:
			if lr.idle() > batchIdle {
				h.close(fmt.Errorf("%w: no output for %v", errHelperDead, batchIdle))
				return 0, h.gone()
			}
		}
	}
}

// errStreamLong: a streamed reply longer than its limit.
var errStreamLong = errors.New("reply longer than its limit")

// streamReply sends line and reads its reply (see stream).
func (h *execHelper) streamReply(line, tag string, lr *streamReader, read func(io.Reader) error) (int, error) {
	if _, err := io.WriteString(h.stdin, line); err != nil {
		return 0, err
	}
	if _, err := h.readToLine(lr, tag+" start", 64<<10); err != nil {
		return 0, err
	}
	if err := read(lr); err != nil {
		return 0, err
	}
	rest, err := h.readToLine(lr, tag+" ", 64<<10)
	if err != nil {
		return 0, err
	}
	status, err := strconv.Atoi(strings.TrimSpace(rest))
	if err != nil {
		return 0, fmt.Errorf("reply status %q", rest)
	}
	return status, nil
}

// readToLine reads lines from lr until one that begins with prefix, after
// a newline or the read's start; it returns the rest of that line. More
// than max bytes before it is an error.
func (h *execHelper) readToLine(lr *streamReader, prefix string, max int) (string, error) {
	br := bufio.NewReaderSize(lr, 4096)
	defer func() {
		// What br read ahead of the line is the caller's next read.
		lr.unread(br)
	}()
	atStart, seen := true, 0
	for {
		l, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
		if rest, ok := strings.CutPrefix(string(l), prefix); ok && atStart && err == nil {
			return strings.TrimSuffix(rest, "\n"), nil
		}
		if seen += len(l); seen > max {
			return "", fmt.Errorf("no reply line %q in %d bytes", prefix, max)
		}
		atStart = err == nil
	}
}

// streamReader is a streamed reply read from r: at most left bytes, the
// time of the last byte kept for the idle watch, and bytes read ahead
// (pending) given back first.
type streamReader struct {
	r       io.Reader
	left    int64
	pending []byte
	last    monoStamp // the last read: a clock stepped is no silence
}

func (s *streamReader) touch()              { s.last.touch() }
func (s *streamReader) idle() time.Duration { return s.last.since() }

func (s *streamReader) Read(p []byte) (int, error) {
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	if s.left <= 0 {
		return 0, errStreamLong
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	if n > 0 {
		s.touch()
	}
	return n, err
}

// unread gives back what br holds unread, to be read again first.
func (s *streamReader) unread(br *bufio.Reader) {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		s.pending = append(append([]byte(nil), b...), s.pending...)
	}
}
