package carrier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
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

// hostileSFTP serves one SFTP channel: it starts as a server would (init,
// realpath), says no such file to every request but those naming victim,
// which it answers as bad says.
func hostileSFTP(ch ssh.Channel, bad func(id uint32, send func([]byte))) {
	var mu sync.Mutex
	send := func(p []byte) {
		mu.Lock()
		defer mu.Unlock()
		ch.Write(binary.BigEndian.AppendUint32(nil, uint32(len(p))))
		ch.Write(p)
	}
	status := func(id, code uint32) []byte {
		p := binary.BigEndian.AppendUint32([]byte{101}, id)
		p = binary.BigEndian.AppendUint32(p, code)
		return append(p, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(ch, hdr[:]); err != nil {
			return
		}
		pkt := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(ch, pkt); err != nil || len(pkt) < 5 {
			return
		}
		id := binary.BigEndian.Uint32(pkt[1:])
		arg, _, _ := protocol.CutString(pkt[5:])
		switch {
		case pkt[0] == fxpInit:
			send([]byte{fxpVersion, 0, 0, 0, 3})
		case pkt[0] == 16: // realpath
			p := binary.BigEndian.AppendUint32([]byte{104}, id)
			p = binary.BigEndian.AppendUint32(p, 1)
			p = append(p, 0, 0, 0, 1, '/', 0, 0, 0, 1, '/', 0, 0, 0, 0)
			send(p)
		case string(arg) == "victim":
			go bad(id, func(p []byte) { send(p) })
		default:
			send(status(id, 2))
		}
	}
}

// TestSFTPHostileRepliesEnd: whatever a hostile SFTP server answers to one
// request (nothing, a reply to no request, two replies, a reply longer
// than any reply may be), the carrier's requests end: with an error
// (pkg/sftp drops a channel whose replies make no sense), or the session
// given up as stalled. None hangs.
func TestSFTPHostileRepliesEnd(t *testing.T) {
	const idle = 300 * time.Millisecond
	stat := func(id uint32) []byte {
		p := binary.BigEndian.AppendUint32([]byte{101}, id)
		return append(p, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	for name, bad := range map[string]func(id uint32, send func([]byte)){
		"no reply":         func(uint32, func([]byte)) {},
		"reply to no one":  func(id uint32, send func([]byte)) { send(stat(id + 1000)) },
		"two replies":      func(id uint32, send func([]byte)) { send(stat(id)); send(stat(id)) },
		"too long a reply": func(id uint32, send func([]byte)) { send(append(stat(id), make([]byte, 300<<10)...)) },
	} {
		t.Run(name, func(t *testing.T) {
			_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
			cs, _ := ssh.NewSignerFromKey(cpriv)
			srv := sftptest.Start(t, []ssh.PublicKey{cs.PublicKey()}, "", func(ch ssh.Channel) { hostileSFTP(ch, bad) })
			host, port := srv.Addr()
			s := dialTest(t, host, port, cs, 2*time.Second)
			s.watchIdle(idle)
			done := make(chan error, 1)
			go func() {
				_, err := s.sftp.Stat("victim")
				if err == nil {
					_, err = s.sftp.Stat("victim")
				}
				done <- err
			}()
			select {
			case err := <-done:
				t.Logf("stalled %v (%s): %v", s.Stalled(), s.StallReason(), err)
			case <-time.After(30 * time.Second):
				t.Fatal("a request still waited after 30 s")
			}
		})
	}
}
