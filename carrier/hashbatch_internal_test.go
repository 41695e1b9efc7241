package carrier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
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
	s := hashTestSession(t, ssh.DiscardRequests)
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

// TestHashBusyFromItsSending: a hash request waiting behind another (the
// host answers global requests in order, and ours go one at a time) is
// given its time from when it goes out, not from when it was asked for:
// a batch asked for while a big file was hashed, then hashed for longer
// than the idle timeout but within what its size allows, is no stall.
// Both sleeps leave 2 s of their allowance (a loaded machine's margin);
// counted from when it was asked for, the batch's allowance would end
// 3 s before its reply.
func TestHashBusyFromItsSending(t *testing.T) {
	defer setHashSlack(time.Second)()
	bigSent := make(chan struct{})
	s := hashTestSession(t, func(reqs <-chan *ssh.Request) {
		for r := range reqs { // in order, as an agent
			switch r.Type {
			case protocol.HashRangeRequest:
				close(bigSent)
				time.Sleep(5 * time.Second) // within 1 s + 30 MiB at 5 MiB/s (2 s to spare)
				r.Reply(false, nil)
			case protocol.HashBatchRequest:
				items, _ := protocol.UnmarshalHashBatch(r.Payload)
				time.Sleep(5 * time.Second) // within 1 s + 30 MiB at 5 MiB/s (2 s to spare)
				r.Reply(true, protocol.MarshalHashBatchReply(make([][]byte, len(items))))
			default:
				r.Reply(false, nil)
			}
		}
	})
	s.watchIdle(500 * time.Millisecond)
	go s.agentHash(context.Background(), "big", 30<<20)
	<-bigSent
	var queued []*batchedHash
	for i := range 120 {
		queued = append(queued, &batchedHash{item: protocol.HashBatchItem{Path: fmt.Sprint("f", i), Length: protocol.MaxHashBatchLength}, done: make(chan struct{})})
	}
	s.hashBatch.queue, s.hashBatch.sending = queued, true
	s.hashBatch.send(s)
	if s.Stalled() {
		t.Fatalf("a batch hashed for 5 s (its size allows 7 s) after waiting 5 s behind a big file: %s", s.StallReason())
	}
	for i, w := range queued {
		if w.err == nil || strings.Contains(w.err.Error(), "EOF") {
			t.Fatalf("item %d: %v, want refused by the host", i, w.err)
		}
	}
}

// hashTestSession dials an SFTP server (of an empty directory) whose global
// requests are handed to requests.
func hashTestSession(t *testing.T, requests func(<-chan *ssh.Request)) *Session {
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	cs, _ := ssh.NewSignerFromKey(cpriv)
	dir := t.TempDir()
	srv := sftptest.StartWithRequests(t, []ssh.PublicKey{cs.PublicKey()}, "", func(ch ssh.Channel) {
		if s, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir)); err == nil {
			s.Serve()
		}
	}, requests)
	host, port := srv.Addr()
	return dialTest(t, host, port, cs, 5*time.Second)
}
