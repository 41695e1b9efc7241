package carrier

import (
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

func TestDropStalePartials(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Now().Unix()
	live := origin{"alpha", "beta", "a.txt", 100, mtime}
	gone := origin{"alpha", "beta", "old.txt", 100, mtime}
	other := origin{"gamma", "beta", "x", 100, mtime}
	// Partials left by an earlier run.
	os.MkdirAll(filepath.Join(dir, "partial"), 0o700)
	for _, o := range []origin{live, gone, other} {
		os.WriteFile(filepath.Join(dir, "partial", o.partialName()), make([]byte, 40), 0o600)
	}
	b, err := OpenBuffer(dir, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Used() != 120 {
		t.Fatalf("partials count %d bytes, want 120", b.Used())
	}
	n, freed := b.dropStalePartials("alpha", map[string]bool{live.partialName(): true})
	if n != 1 || freed != 40 || b.Used() != 80 {
		t.Fatalf("dropped %d (%d bytes), used %d; want 1, 40, 80", n, freed, b.Used())
	}
	for o, want := range map[origin]bool{live: true, gone: false, other: true} {
		_, err := os.Stat(b.partialPath(o))
		if (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", o.Path, err == nil, want)
		}
	}
}

// failingWriter passes writes on until fail is set, then fails them with
// io.EOF, as an SSH channel whose link dropped does.
type failingWriter struct {
	w    io.WriteCloser
	fail atomic.Bool
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, io.EOF
	}
	return f.w.Write(p)
}

func (f *failingWriter) Close() error { return f.w.Close() }

// TestReadWindowedLinkDrop: pkg/sftp wraps the channel's io.EOF when it
// cannot send a request ("failed to send packet: EOF"). readWindowed
// reports that as the error it is, never as the file's end: a short read
// taken for the end is "the source changed", and the partial is deleted.
func TestReadWindowedLinkDrop(t *testing.T) {
	sr, cw := io.Pipe()
	cr, sw := io.Pipe()
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{sr, sw})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		srv.Serve()
		sw.Close()
	}()
	fw := &failingWriter{w: cw}
	client, err := sftp.NewClientPipe(cr, fw)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := client.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	fw.fail.Store(true)
	n, err := readWindowed(f, io.Discard, 0)
	if err == nil {
		t.Fatalf("readWindowed over a dropped link: %d bytes, no error: taken for the end of the file", n)
	}
}
