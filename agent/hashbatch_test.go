package agent

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

// TestHashBatch: hash-batch@messor answers each item as hash-range would
// (the digest of the first Length bytes), an empty answer for each item
// hash-range refuses (out of the root, a symlink out, a reserved name, a
// file shorter than asked), in order; a malformed request, or one of too
// many items, is refused whole.
func TestHashBatch(t *testing.T) {
	e, c, data := newHashEnv(t)
	conn := e.dial()

	items := []protocol.HashBatchItem{
		{Path: "messor/inbox/src/f", Length: 10_000},
		{Path: "messor/inbox/src/link", Length: 1},
		{Path: "/messor/inbox/src/f", Length: 100},
		{Path: "messor/inbox/src/.messor-other", Length: 1},
		{Path: "messor/inbox/src/f", Length: 10_001},
		{Path: "../" + filepath.Base(e.outside) + "/secret", Length: 1},
		{Path: "messor/inbox/src/missing", Length: 1},
		{Path: "messor/inbox/src/f", Length: 0},
	}
	ok, reply, err := conn.SendRequest(protocol.HashBatchRequest, true, protocol.MarshalHashBatch(items))
	if err != nil || !ok {
		t.Fatalf("hash-batch: ok=%v err=%v", ok, err)
	}
	sums, err := protocol.UnmarshalHashBatchReply(reply, len(items))
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		var want []byte
		switch i {
		case 0, 2, 7:
			s := sha256.Sum256(data[:it.Length])
			want = s[:]
		}
		if string(sums[i]) != string(want) {
			t.Errorf("item %d (%s, %d bytes): %x, want %x", i, it.Path, it.Length, sums[i], want)
		}
	}

	// One request hashes at most MaxHashBatch x MaxHashBatchLength bytes,
	// not one huge file many times over.
	big := randomBytes(t, protocol.MaxHashBatchLength+1)
	writeFile(t, c, "messor/inbox/src/big", big)
	bigItems := []protocol.HashBatchItem{
		{Path: "messor/inbox/src/big", Length: protocol.MaxHashBatchLength + 1},
		{Path: "messor/inbox/src/big", Length: protocol.MaxHashBatchLength},
	}
	ok, reply, err = conn.SendRequest(protocol.HashBatchRequest, true, protocol.MarshalHashBatch(bigItems))
	if err != nil || !ok {
		t.Fatalf("hash-batch: ok=%v err=%v", ok, err)
	}
	if sums, err = protocol.UnmarshalHashBatchReply(reply, len(bigItems)); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(big[:protocol.MaxHashBatchLength]); sums[0] != nil || string(sums[1]) != string(want[:]) {
		t.Errorf("a batch item of %d bytes answered %x, want refused; one of %d answered %x, want %x",
			bigItems[0].Length, sums[0], bigItems[1].Length, sums[1], want)
	}

	tooMany := make([]protocol.HashBatchItem, protocol.MaxHashBatch+1)
	for i := range tooMany {
		tooMany[i] = items[0]
	}
	for _, payload := range [][]byte{protocol.MarshalHashBatch(tooMany), {0, 0, 0, 1, 0, 0}, append(protocol.MarshalHashBatch(items), 0)} {
		if ok, _, err := conn.SendRequest(protocol.HashBatchRequest, true, payload); err != nil || ok {
			t.Errorf("hash-batch of %d bytes: ok=%v err=%v, want refused", len(payload), ok, err)
		}
	}
}

// newHashEnv starts an agent whose inbox/src holds f (10,000 random bytes,
// returned), a reserved name with the same bytes and a symlink out of the
// root.
func newHashEnv(t *testing.T) (*testEnv, *sftp.Client, []byte) {
	e := newEnv(t)
	e.start()
	c := e.sftp()
	data := randomBytes(t, 10_000)
	if err := c.MkdirAll("messor/inbox/src"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, "messor/inbox/src/f", data)
	os.WriteFile(e.inRoot("inbox/src/.messor-other"), data, 0o644)
	mustSymlink(t, filepath.Join(e.outside, "secret"), e.inRoot("inbox/src/link"))
	return e, c, data
}

// TestHashBatchConfinedAsHashRange: every path a batch names is answered
// exactly as hash-range answers it alone (the same digest, or refused),
// for hostile names and for what must not be read or reveal itself: ..,
// absolute paths, a symlink to /etc/shadow, a symlinked directory, a
// FIFO and a device (never waited on), NUL bytes, empty and very long
// names, and the sent and inbox directories.
func TestHashBatchConfinedAsHashRange(t *testing.T) {
	e, c, _ := newHashEnv(t)
	for _, d := range []string{"messor/outbox/beta", "messor/sent/beta"} {
		if err := c.MkdirAll(d); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, c, "messor/outbox/beta/f", []byte("outbox file"))
	writeFile(t, c, "messor/sent/beta/f", []byte("sent file"))
	mustSymlink(t, "/etc/shadow", e.inRoot("outbox/beta/shadow"))
	mustSymlink(t, e.outside, e.inRoot("outbox/beta/dirlink"))
	mustSymlink(t, e.inRoot("inbox/src"), e.inRoot("outbox/beta/inlink"))
	if err := syscall.Mkfifo(e.inRoot("outbox/beta/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(e.inRoot("outbox/beta/null"), syscall.S_IFCHR|0o666, 1<<8|3 /* 1:3, as /dev/null */); err != nil {
		t.Fatal(err)
	}
	long := "messor/outbox/beta/" + strings.Repeat("x", 5000)
	paths := []string{
		"messor/outbox/beta/f", "messor/sent/beta/f", "messor/inbox/src/f", "messor/outbox/beta/shadow",
		"messor/outbox/beta/dirlink/secret", "messor/outbox/beta/inlink/f", "messor/outbox/beta/fifo",
		"messor/outbox/beta/null", "messor/outbox/beta/f\x00", "messor/outbox/beta/\x00/f", "", ".", "/",
		long, "/etc/shadow", "messor/outbox/../../etc/shadow", "../" + filepath.Base(e.outside) + "/secret",
		e.outside + "/secret", "messor/outbox/beta/../../sent/beta/f", "messor/outbox/beta/", "messor",
	}
	conn := e.dial()
	var items []protocol.HashBatchItem
	for _, p := range paths {
		items = append(items, protocol.HashBatchItem{Path: p, Length: 1})
	}
	type answer struct {
		ok    bool
		reply []byte
		err   error
	}
	ask := func(name string, payload []byte) answer {
		got := make(chan answer, 1)
		go func() {
			ok, reply, err := conn.SendRequest(name, true, payload)
			got <- answer{ok, reply, err}
		}()
		select {
		case a := <-got:
			return a
		case <-time.After(20 * time.Second):
			t.Fatalf("%s not answered within 20 s: the agent waits on a FIFO or device", name)
			return answer{}
		}
	}
	a := ask(protocol.HashBatchRequest, protocol.MarshalHashBatch(items))
	if a.err != nil || !a.ok {
		t.Fatalf("hash-batch: ok=%v err=%v", a.ok, a.err)
	}
	sums, err := protocol.UnmarshalHashBatchReply(a.reply, len(items))
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		one := ask(protocol.HashRangeRequest, ssh.Marshal(protocol.HashRangeMsg{Path: it.Path, Length: it.Length}))
		if one.err != nil {
			t.Fatal(one.err)
		}
		var want []byte
		if one.ok {
			want = one.reply
		}
		if string(sums[i]) != string(want) {
			t.Errorf("%q: batch answered %x, hash-range %x (ok=%v)", it.Path, sums[i], want, one.ok)
		}
	}
}
