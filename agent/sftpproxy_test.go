package agent

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"regexp"
	"testing"

	"golang.org/x/crypto/ssh"
)

// rawSFTP speaks SFTP packets directly, to pipeline requests the way a
// client library would not.
type rawSFTP struct {
	t   *testing.T
	in  io.WriteCloser
	out io.Reader
}

func newRawSFTP(t *testing.T, conn *ssh.Client) *rawSFTP {
	t.Helper()
	s, err := conn.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	in, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	return &rawSFTP{t: t, in: in, out: out}
}

func (r *rawSFTP) send(typ byte, id uint32, fields ...any) {
	r.t.Helper()
	b := []byte{typ}
	if typ != fxpInit {
		b = binary.BigEndian.AppendUint32(b, id)
	}
	for _, f := range fields {
		switch v := f.(type) {
		case string:
			b = appendString(b, v)
		case []byte:
			b = appendString(b, string(v))
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case uint64:
			b = binary.BigEndian.AppendUint64(b, v)
		default:
			r.t.Fatalf("field %T", f)
		}
	}
	if err := writePacket(r.in, b); err != nil {
		r.t.Fatal(err)
	}
}

// recv returns the next packet's type, id and the rest.
func (r *rawSFTP) recv() (byte, uint32, []byte) {
	r.t.Helper()
	body, err := readPacket(r.out, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if body[0] == fxpVersion {
		return body[0], 0, body[5:]
	}
	return body[0], binary.BigEndian.Uint32(body[1:5]), body[5:]
}

func (r *rawSFTP) status(rest []byte) uint32 {
	if len(rest) < 4 {
		r.t.Fatalf("short status %x", rest)
	}
	return binary.BigEndian.Uint32(rest)
}

func TestFsyncRelay(t *testing.T) {
	e := newEnv(t)
	e.start()
	r := newRawSFTP(t, e.dial())

	r.send(fxpInit, 0, uint32(3))
	typ, _, rest := r.recv()
	if typ != fxpVersion || !bytes.Contains(rest, []byte(extFsync)) || bytes.Contains(rest, []byte(extHardlink)) {
		t.Fatalf("version packet %d %q", typ, rest)
	}
	if !bytes.Contains(rest, []byte("posix-rename@openssh.com")) || !bytes.Contains(rest, []byte("statvfs@openssh.com")) {
		t.Fatalf("version packet lost extensions: %q", rest)
	}

	const pflags = 0x02 | 0x08 | 0x10 // write, creat, trunc
	r.send(fxpOpen, 1, "messor/outbox/raw", uint32(pflags), uint32(0))
	typ, id, rest := r.recv()
	if typ != fxpHandle || id != 1 {
		t.Fatalf("open: type %d id %d %q", typ, id, rest)
	}
	handle, _, _ := sshString(rest)

	// Pipeline many writes and an fsync without waiting: the fsync must be
	// answered after every write before it.
	const n, size = 256, 32 << 10
	chunk := bytes.Repeat([]byte{'x'}, size)
	for i := range n {
		r.send(6, uint32(100+i), handle, uint64(i*size), chunk)
	}
	r.send(fxpExtended, 999, extFsync, handle)
	r.send(fxpExtended, 1000, extFsync, "no-such-handle")
	writes := 0
	for range n + 2 {
		typ, id, rest := r.recv()
		if typ != fxpStatus {
			t.Fatalf("type %d", typ)
		}
		switch {
		case id == 999:
			if writes != n {
				t.Fatalf("fsync answered after %d of %d writes", writes, n)
			}
			if code := r.status(rest); code != fxOK {
				t.Fatalf("fsync status %d %q", code, rest)
			}
		case id == 1000:
			if code := r.status(rest); code == fxOK {
				t.Fatal("fsync of an unknown handle succeeded")
			}
		default:
			if code := r.status(rest); code != fxOK {
				t.Fatalf("write %d status %d", id, code)
			}
			writes++
		}
	}
	if !regexp.MustCompile(`msg="sftp fsync" .*path=/messor/outbox/raw handles=1`).MatchString(e.log.String()) {
		t.Error("fsync did not reach the open file")
	}
	r.send(fxpClose, 2, handle)
	if typ, id, rest := r.recv(); typ != fxpStatus || id != 2 || r.status(rest) != fxOK {
		t.Fatalf("close: %d %d %q", typ, id, rest)
	}
	r.send(fxpExtended, 3, extFsync, handle)
	if typ, id, rest := r.recv(); typ != fxpStatus || id != 3 || r.status(rest) == fxOK {
		t.Fatalf("fsync of a closed handle: %d %d %q", typ, id, rest)
	}
	// Unknown extensions are refused, and the session goes on.
	r.send(fxpExtended, 4, "no-such@ext", "x")
	if typ, id, rest := r.recv(); typ != fxpStatus || id != 4 || r.status(rest) == fxOK {
		t.Fatalf("unknown extension: %d %d %q", typ, id, rest)
	}
	fi, err := os.Stat(e.inRoot("outbox/raw"))
	if err != nil || fi.Size() != n*size {
		t.Fatalf("file on disk: %v, %v", fi, err)
	}
	r.in.Close()
}
