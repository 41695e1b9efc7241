package carrier

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// TestHashBatchFitsAPacket: the hashes queued while a batch was on the way,
// for files of long paths (192 workers, paths of 3,000 bytes), go out in
// requests an SSH packet holds (SSH implementations take up to 256 KiB, and
// a bigger packet ends the connection); the session lives on, and each file
// is answered (here refused: the host is no agent), none lost to a dead
// connection.
func TestHashBatchFitsAPacket(t *testing.T) {
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	cs, _ := ssh.NewSignerFromKey(cpriv)
	dir := t.TempDir()
	srv := sftptest.Start(t, []ssh.PublicKey{cs.PublicKey()}, "", func(ch ssh.Channel) {
		if s, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir)); err == nil {
			s.Serve()
		}
	})
	host, port := srv.Addr()
	s := dialTest(t, host, port, cs, 5*time.Second)
	long := "messor/outbox/beta/" + strings.Repeat(strings.Repeat("d", 250)+"/", 11)
	b := &s.hashBatch
	var queued []*batchedHash
	for i := range 192 {
		w := &batchedHash{item: protocol.HashBatchItem{Path: long + strings.Repeat("f", 10) + string(rune('a'+i%26)), Length: 100}, done: make(chan struct{})}
		queued = append(queued, w)
	}
	b.queue, b.sending = queued, true
	b.send(s)
	for i, w := range queued {
		if !errors.Is(w.err, errBatchRefused) {
			t.Fatalf("item %d of %d queued: %v, want refused by a host that is no agent", i, len(queued), w.err)
		}
	}
	if _, err := s.sftp.Getwd(); err != nil {
		t.Fatalf("the session after the batches: %v", err)
	}
}
