package carrier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sftptest"
)

// TestStallAfterHostHashed: a host hashing a big file for us holds the
// idle watch off only while that hash is outstanding. Once answered (here
// refused at once), a request the host never answers (an open blocked on
// a FIFO) is a stall after the idle timeout again, not once the bound the
// hash's size allowed (half an hour for 10 GiB) has passed.
func TestStallAfterHostHashed(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	cs, _ := ssh.NewSignerFromKey(cpriv)
	srv := sftptest.Start(t, []ssh.PublicKey{cs.PublicKey()}, "", func(ch ssh.Channel) {
		if s, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir)); err == nil {
			s.Serve()
		}
	})
	host, port := srv.Addr()
	s := dialTest(t, host, port, cs, 2*time.Second)
	if _, err := s.agentHash(context.Background(), "big", 10<<30); err == nil {
		t.Fatal("a host without an agent hashed")
	}
	s.watchIdle(300 * time.Millisecond)
	done := make(chan error, 1)
	go func() { _, err := s.sftp.Open("fifo"); done <- err }()
	select {
	case err := <-done:
		if !s.Stalled() {
			t.Fatalf("the open ended without a stall: %v", err)
		}
		t.Logf("%s: %v", s.StallReason(), err)
	case <-time.After(30 * time.Second):
		t.Fatal("an open the host never answers, after a hash it answered, was no stall within 30 s")
	}
}
