package carrier

import (
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/pkg/sftp"
)

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
