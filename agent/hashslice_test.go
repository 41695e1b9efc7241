package agent

import (
	"crypto/sha256"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

// TestHashSlice: hash-slice@messor hashes exactly the slice asked for, and
// refuses what hash-range refuses (paths out of the root, symlinks out,
// reserved names, what is not a regular file) and any slice that is not
// wholly inside the file.
func TestHashSlice(t *testing.T) {
	e := newEnv(t)
	e.start()
	c := e.sftp()
	data := randomBytes(t, 100_000)
	if err := c.MkdirAll("messor/inbox/src"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, "messor/inbox/src/f", data)
	part := "messor/inbox/src/" + protocol.PartialName("f", "00", "carrier")
	writeFile(t, c, part, data)
	os.WriteFile(e.inRoot("inbox/src/.messor-other"), data, 0o644)
	mustSymlink(t, filepath.Join(e.outside, "secret"), e.inRoot("inbox/src/link"))
	mustSymlink(t, e.outside, e.inRoot("inbox/src/dirlink"))
	mustSymlink(t, "f", e.inRoot("inbox/src/inside-link"))
	if err := syscall.Mkfifo(e.inRoot("inbox/src/fifo"), 0o644); err != nil {
		t.Fatal("mkfifo:", err)
	}
	conn := e.dial()

	ask := func(p string, off, n uint64) ([]byte, bool) {
		t.Helper()
		ok, reply, err := conn.SendRequest(protocol.HashSliceRequest, true,
			ssh.Marshal(&protocol.HashSliceMsg{Path: p, Offset: off, Length: n}))
		if err != nil {
			t.Fatalf("SendRequest: %v", err)
		}
		return reply, ok
	}
	size := uint64(len(data))
	for _, tc := range []struct{ off, n uint64 }{
		{0, 0}, {0, 1}, {0, size}, {1, 4096}, {4096, 4096}, {size - 1, 1}, {size, 0}, {12345, size - 12345},
	} {
		for _, p := range []string{"messor/inbox/src/f", "/messor/inbox/src/f", "messor/inbox/src/inside-link", part} {
			got, ok := ask(p, tc.off, tc.n)
			want := sha256.Sum256(data[tc.off : tc.off+tc.n])
			if !ok || string(got) != string(want[:]) {
				t.Errorf("hash of %d bytes at %d of %s: ok=%v %x, want %x", tc.n, tc.off, p, ok, got, want)
			}
		}
	}
	for _, tc := range []struct {
		p      string
		off, n uint64
	}{
		{"messor/inbox/src/f", size, 1},            // past EOF
		{"messor/inbox/src/f", size + 1, 0},        // offset past EOF
		{"messor/inbox/src/f", size - 10, 11},      // ends past EOF
		{"messor/inbox/src/f", 1 << 40, 1},         // far past EOF
		{"messor/inbox/src/f", math.MaxUint64, 1},  // overflows
		{"messor/inbox/src/f", 1, math.MaxUint64},  // overflows
		{"messor/inbox/src/f", 1 << 62, 1<<62 + 1}, // off+n over MaxInt64
		{"messor/inbox/src/f", 0, 1 << 63},         // length out of range
		{"messor/inbox/src/missing", 0, 0},         // no such file
		{"messor/inbox/src", 0, 0},                 // a directory
		{"messor/inbox/src/fifo", 0, 0},            // a FIFO: refused, not blocked on
		{"../../etc/passwd", 0, 1},                 // escaping the root
		{"/etc/passwd", 0, 1},                      // absolute, outside
		{"messor/../../etc/passwd", 1, 1},          // climbing out
		{e.outside + "/secret", 0, 1},              // the host path of an outside file
		{"messor/inbox/src/link", 0, 1},            // a symlink out of the root
		{"messor/inbox/src/dirlink/secret", 0, 1},  // through a directory symlink out
		{"messor/inbox/src/.messor-other", 0, 1},   // reserved name
		{"/", 0, 0},                                // the virtual root
	} {
		done := make(chan bool, 1)
		go func() { _, ok := ask(tc.p, tc.off, tc.n); done <- ok }()
		select {
		case ok := <-done:
			if ok {
				t.Errorf("hash of %d bytes at %d of %q: accepted", tc.n, tc.off, tc.p)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("hash of %q: no answer after 10s (blocked?)", tc.p)
		}
	}
	// A malformed payload (a hash-range one, too short) is refused, and
	// the connection lives on.
	if ok, _, err := conn.SendRequest(protocol.HashSliceRequest, true,
		ssh.Marshal(&protocol.HashRangeMsg{Path: "messor/inbox/src/f", Length: 1})); ok || err != nil {
		t.Errorf("malformed request: ok=%v err=%v", ok, err)
	}
	if _, ok := ask("messor/inbox/src/f", 1, 1); !ok {
		t.Error("connection broken after a malformed request")
	}
	// hash-range is unchanged beside it.
	ok, got, err := conn.SendRequest(protocol.HashRangeRequest, true,
		ssh.Marshal(&protocol.HashRangeMsg{Path: "messor/inbox/src/f", Length: 4096}))
	if want := sha256.Sum256(data[:4096]); err != nil || !ok || string(got) != string(want[:]) {
		t.Errorf("hash-range beside hash-slice: ok=%v err=%v", ok, err)
	}
}
