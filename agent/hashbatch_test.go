package agent

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkg/sftp"

	"github.com/messor-sync/messor/protocol"
)

// TestHashBatch: hash-batch@messor answers each item as hash-range would
// (the digest of the first Length bytes), an empty answer for each item
// hash-range refuses (out of the root, a symlink out, a reserved name, a
// file shorter than asked), in order; a malformed request, or one of too
// many items, is refused whole.
func TestHashBatch(t *testing.T) {
	e, _, data := newHashEnv(t)
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
