package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// hostile is an SFTP server (pkg/sftp RequestServer behind an x/crypto/ssh
// server) that lies: its outbox lists names that climb out ("../../etc/x"),
// absolute names and names with '/', sizes that lie both ways, a file that
// never ends, and, in endless mode, a directory that never stops listing.
// As a destination it keeps uploads in memory and records every request
// that changes something.
type hostile struct {
	endless bool
	hang    bool // list only "neverends", a file whose reads never answer
	stop    chan struct{}

	mu    sync.Mutex
	ops   []string          // "method path [target]" of every changing request
	files map[string][]byte // uploaded, by absolute path
	alias map[string]string // an outbox file renamed (claimed): its name now -> its listed name
}

var hostileOutbox = map[string]int64{ // name -> listed size
	"../../etc/x": 5, "/abs": 5, "a/b": 5, "..": 5,
	"liesmall": 10, "lieslarge": 1 << 20, "ok.txt": 3,
}

type info struct {
	name string
	size int64
	mode fs.FileMode
}

func (i info) Name() string       { return i.name }
func (i info) Size() int64        { return i.size }
func (i info) Mode() fs.FileMode  { return i.mode }
func (i info) ModTime() time.Time { return hostileMTime }

// hostileMTime is every listed file's mtime: fixed, as a real file's is
// while nobody writes it (one taken from the clock would change between the
// carrier's checks at a second's turn, and the file would wait).
var hostileMTime = time.Now().Add(-time.Hour).Truncate(time.Second)

func (i info) IsDir() bool { return i.mode.IsDir() }
func (i info) Sys() any    { return nil }

type listed []os.FileInfo

func (l listed) ListAt(out []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	return n, nil
}

// endlessList never says EOF.
type endlessList struct{}

func (endlessList) ListAt(out []os.FileInfo, off int64) (int, error) {
	for i := range out {
		out[i] = info{fmt.Sprintf("f%012d-%s", off+int64(i), strings.Repeat("x", 40)), 1, 0o644}
	}
	return len(out), nil
}

func (h *hostile) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p := r.Filepath
	switch r.Method {
	case "List":
		switch {
		case p == "/messor/outbox":
			return listed{info{"beta", 0, fs.ModeDir | 0o755}, info{"../evil", 0, fs.ModeDir | 0o755}}, nil
		case p == "/messor/outbox/beta" && h.endless:
			return endlessList{}, nil
		case p == "/messor/outbox/beta" && h.hang:
			return listed{info{"neverends", 1 << 20, 0o644}}, nil
		case p == "/messor/outbox/beta":
			var l listed
			for n, size := range hostileOutbox {
				l = append(l, info{n, size, 0o644})
			}
			return l, nil
		}
		return listed{}, nil
	default: // Stat, Lstat
		if h.hang && p == "/messor/outbox/beta/neverends" {
			return listed{info{"neverends", 1 << 20, 0o644}}, nil
		}
		h.mu.Lock()
		a, ok := h.alias[p]
		h.mu.Unlock()
		if ok {
			return listed{info{path.Base(p), hostileOutbox[a], 0o644}}, nil
		}
		if strings.HasPrefix(p, "/messor/outbox/beta/") {
			if size, ok := hostileOutbox[path.Base(p)]; ok {
				return listed{info{path.Base(p), size, 0o644}}, nil
			}
		}
		h.mu.Lock()
		b, ok := h.files[p]
		h.mu.Unlock()
		if ok {
			return listed{info{path.Base(p), int64(len(b)), 0o644}}, nil
		}
		if p == "/" || p == "/messor" || strings.HasPrefix(p, "/messor/inbox") && h.isDir(p) {
			return listed{info{path.Base(p), 0, fs.ModeDir | 0o755}}, nil
		}
		return nil, os.ErrNotExist
	}
}

func (h *hostile) isDir(p string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, op := range h.ops {
		if op == "Mkdir "+p {
			return true
		}
	}
	return false
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

func (h *hostile) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	switch path.Base(r.Filepath) {
	case "liesmall": // listed as 10 bytes, serves without end
		return readerAtFunc(func(p []byte, _ int64) (int, error) { return len(p), nil }), nil
	case "lieslarge": // listed as 1 MiB, serves 100 bytes
		return readerAtFunc(func(p []byte, off int64) (int, error) {
			if off >= 100 {
				return 0, io.EOF
			}
			n := min(int64(len(p)), 100-off)
			return int(n), nil
		}), nil
	case "neverends": // a read that never answers
		return readerAtFunc(func(p []byte, _ int64) (int, error) { <-h.stop; return 0, io.ErrUnexpectedEOF }), nil
	case "ok.txt":
		return readerAtFunc(func(p []byte, off int64) (int, error) {
			if off >= 3 {
				return 0, io.EOF
			}
			return copy(p, "ok\n"[off:]), io.EOF
		}), nil
	}
	h.mu.Lock()
	b, ok := h.files[r.Filepath]
	h.mu.Unlock()
	if !ok {
		return nil, os.ErrNotExist
	}
	return bytesAt(b), nil
}

// bytesAt reads b, saying EOF with its last bytes.
func bytesAt(b []byte) io.ReaderAt {
	return readerAtFunc(func(p []byte, off int64) (int, error) {
		if off >= int64(len(b)) {
			return 0, io.EOF
		}
		n := copy(p, b[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	})
}

func (h *hostile) record(op string) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

type memWriter struct {
	h *hostile
	p string
}

func (w memWriter) WriteAt(b []byte, off int64) (int, error) {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	cur := w.h.files[w.p]
	if need := off + int64(len(b)); need > int64(len(cur)) {
		cur = append(cur, make([]byte, need-int64(len(cur)))...)
	}
	copy(cur[off:], b)
	w.h.files[w.p] = cur
	return len(b), nil
}

func (h *hostile) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	h.record("Put " + r.Filepath)
	h.mu.Lock()
	if _, ok := h.files[r.Filepath]; !ok || r.Pflags().Trunc {
		h.files[r.Filepath] = nil
	}
	h.mu.Unlock()
	return memWriter{h, r.Filepath}, nil
}

func (h *hostile) Filecmd(r *sftp.Request) error {
	h.record(strings.TrimSpace(r.Method + " " + r.Filepath + " " + r.Target))
	h.mu.Lock()
	defer h.mu.Unlock()
	_, isListed := hostileOutbox[path.Base(r.Filepath)]
	switch {
	case r.Method == "Rename" && h.alias[r.Filepath] != "":
		h.alias[r.Target] = h.alias[r.Filepath]
		delete(h.alias, r.Filepath)
		return nil
	case r.Method == "Rename" && isListed && strings.HasPrefix(r.Filepath, "/messor/outbox/beta/"):
		if h.alias == nil {
			h.alias = map[string]string{}
		}
		h.alias[r.Target] = path.Base(r.Filepath)
		return nil
	case r.Method == "Remove" && h.alias[r.Filepath] != "":
		delete(h.alias, r.Filepath)
		return nil
	}
	switch r.Method {
	case "Rename":
		if _, ok := h.files[r.Target]; ok {
			return os.ErrExist
		}
		h.files[r.Target] = h.files[r.Filepath]
		delete(h.files, r.Filepath)
	case "Remove":
		delete(h.files, r.Filepath)
	case "Setstat":
		if r.AttrFlags().Size {
			b := h.files[r.Filepath]
			size := int64(r.Attributes().Size)
			if size <= int64(len(b)) {
				h.files[r.Filepath] = b[:size]
			}
		}
	}
	return nil
}

// startHostile serves h over SSH to the carrier's keys.
func startHostile(h *hostile) conformance.StartFunc { return startHandlers(h) }

// startHandlers serves an SFTP server made of h's handlers over SSH to the
// carrier's keys.
func startHandlers(h interface {
	sftp.FileReader
	sftp.FileWriter
	sftp.FileCmder
	sftp.FileLister
}) conformance.StartFunc {
	return func(t *testing.T, _ string, keys []ssh.PublicKey) conformance.Host {
		return sftptest.Start(t, keys, "", func(ch ssh.Channel) {
			srv := sftp.NewRequestServer(ch, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h})
			srv.Serve()
			srv.Close()
		})
	}
}

// TestHostileServer: the carrier never writes outside its buffer, never
// changes anything on a host outside inbox/<source>/ (and the files it
// took from the outbox), and a lying server costs it bounded time and
// memory.
func TestHostileServer(t *testing.T) {
	t.Parallel()
	liar := &hostile{stop: make(chan struct{}), files: map[string][]byte{}}
	endless := &hostile{endless: true, stop: make(chan struct{}), files: map[string][]byte{}}
	hang := &hostile{hang: true, stop: make(chan struct{}), files: map[string][]byte{}}
	t.Cleanup(func() { close(liar.stop); close(endless.stop); close(hang.stop) })
	e := newEnv(t, "alpha")
	e.Start = startHostile(liar)
	e.AddHost("evil", true)
	e.Start = startHostile(endless)
	e.AddHost("endless", true)
	e.Start = startHostile(hang)
	e.AddHost("hang", true)
	c := e.carrier(1<<30, carrier.Options{MaxListing: 5000})

	// Lies in the outbox: only ok.txt is carried.
	var rs []*carrier.HostReport
	bounded(t, 60*time.Second, "pickup from a liar", func() { rs = c.Pickup(context.Background(), e.Resolve("evil")) })
	r := rs[0]
	t.Logf("liar: %s; err %v; skipped %v; waiting %v; failed %v", r.Summary(), r.Err, r.Skipped, r.Waiting, r.Failed)
	st, err := carrier.ReadStatus(c.Buffer())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Items) != 1 || st.Items[0].Path != "ok.txt" || st.Items[0].Size != 3 {
		t.Errorf("carried %+v, want ok.txt alone", st.Items)
	}
	liar.mu.Lock()
	if len(liar.ops) != 2 || !strings.HasPrefix(liar.ops[0], "Rename /messor/outbox/beta/ok.txt /messor/outbox/beta/"+protocol.ClaimPrefix) ||
		liar.ops[1] != "Remove "+strings.Fields(liar.ops[0])[2] {
		t.Errorf("changes on the liar: %q, want the claim of ok.txt and its removal alone", liar.ops)
	}
	liar.ops = nil
	liar.mu.Unlock()
	onlyBufferWritten(t, e)

	// A read that never answers (the host still answers keepalives, so
	// the idle watch sees it alive) is bounded by the run's context.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	bounded(t, 60*time.Second, "pickup of a file that never ends", func() { rs = c.Pickup(ctx, e.Resolve("hang")) })
	cancel()
	t.Logf("never ends: %v", rs[0].Err)
	if !errors.Is(rs[0].Err, context.DeadlineExceeded) {
		t.Errorf("a read that never answers: %v", rs[0].Err)
	}

	// A directory that never ends: the listing cap ends the visit.
	bounded(t, 60*time.Second, "pickup from an endless directory", func() { rs = c.Pickup(context.Background(), e.Resolve("endless")) })
	t.Logf("endless: %v", rs[0].Err)
	if rs[0].Err == nil || !strings.Contains(rs[0].Err.Error(), "5000 entries or") {
		t.Errorf("endless directory: %v", rs[0].Err)
	}

	// The liar as a destination: every change is inside inbox/alpha/.
	files := map[string][]byte{"x/one.txt": []byte("one"), "two.bin": make([]byte, 300<<10)}
	e.send("alpha", "evil", files)
	if rs := c.Pickup(context.Background(), e.Resolve("alpha")); reportsErr(rs) != nil {
		t.Fatal(reportsErr(rs))
	}
	bounded(t, 60*time.Second, "dropoff to a liar", func() { rs, _ = c.Dropoff(context.Background(), e.Resolve("evil")) })
	if err := reportsErr(rs); err != nil {
		t.Fatal(err)
	}
	liar.mu.Lock()
	defer liar.mu.Unlock()
	made := map[string]bool{} // directories the carrier made: it sets their mode
	for _, op := range liar.ops {
		f := strings.Fields(op)
		for _, p := range f[1:] {
			ancestor := strings.HasPrefix("/messor/inbox/alpha", p)
			if f[0] == "Mkdir" && ancestor {
				made[p] = true
			}
			if !strings.HasPrefix(p, "/messor/inbox/alpha/") && !(ancestor && (f[0] == "Mkdir" || f[0] == "Setstat" && made[p])) {
				t.Errorf("dropoff changed %q outside inbox/alpha/", op)
			}
		}
	}
	for name, want := range files {
		if got := liar.files["/messor/inbox/alpha/"+name]; string(got) != string(want) {
			t.Errorf("delivered %s: %d bytes, want %d", name, len(got), len(want))
		}
	}
	onlyBufferWritten(t, e)
}

// onlyBufferWritten fails if the carrier's HOME holds files other than its
// ssh setup, hosts file and buffer.
func onlyBufferWritten(t *testing.T, e *env) {
	t.Helper()
	var stray []string
	filepath.WalkDir(e.Home.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(e.Home.Dir, p)
		if !strings.HasPrefix(rel, ".ssh/") && !strings.HasPrefix(p, e.Buf+"/") && rel != ".messor_pickup_hosts" {
			stray = append(stray, rel)
		}
		return nil
	})
	sort.Strings(stray)
	if len(stray) > 0 {
		t.Errorf("the carrier wrote outside its buffer: %q", stray)
	}
}
