package carrier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
)

func dialTest(t *testing.T, host string, port int, key ssh.Signer, timeout time.Duration) *Session {
	t.Helper()
	h := discovery.Host{Name: "h", HostName: host, Port: port, User: "root"}
	s, err := Dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), func() ([]ssh.Signer, error) { return []ssh.Signer{key}, nil }, timeout, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Found in review: the hasher was picked once and bound to the lane that
// picked it, so on a host verified by reading back every lane read through
// that one channel, and when the host closed it no lane could verify.
func TestLaneVerifiesOnItsOwnChannel(t *testing.T) {
	dir := t.TempDir()
	content := []byte("hello lanes\n")
	os.WriteFile(filepath.Join(dir, "f.txt"), content, 0o600)
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	cs, _ := ssh.NewSignerFromKey(cpriv)
	var nch atomic.Int32
	kill := make(chan struct{})
	srv := sftptest.Start(t, []ssh.PublicKey{cs.PublicKey()}, "", func(ch ssh.Channel) {
		i := nch.Add(1)
		s, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir))
		if err != nil {
			return
		}
		if i == 2 { // the second SFTP channel: the host closes it on kill
			go s.Serve()
			<-kill
			return
		}
		s.Serve()
	})
	host, port := srv.Addr()
	s := dialTest(t, host, port, cs, 5*time.Second)
	ctx := context.Background()
	ls := s.openLanes(ctx, 2)
	if len(ls) != 2 {
		t.Fatalf("%d lanes, want 2", len(ls))
	}
	if k := ls[1].HashKind(ctx); k != HashByReadback { // lane 1 hashes first
		t.Fatalf("hash kind %s", k)
	}
	want := sha256.Sum256(content)
	if got, err := ls[0].hashRange(ctx, "f.txt", int64(len(content))); err != nil || string(got) != string(want[:]) {
		t.Fatalf("before: %x %v", got, err)
	}
	close(kill)
	time.Sleep(200 * time.Millisecond)
	if got, err := ls[0].hashRange(ctx, "f.txt", int64(len(content))); err != nil || string(got) != string(want[:]) {
		t.Errorf("lane 0 cannot verify once lane 1 is gone: %x %v", got, err)
	}
	// A picker passes over the lane the host closed.
	p := &lanePicker{lanes: ls, dead: make([]atomic.Bool, len(ls))}
	_, err := ls[1].sftp.Stat("f.txt")
	p.check(ls[1], err)
	for range 4 {
		if p.pick() != ls[0] {
			t.Fatalf("a lane the host closed (%v) is still handed out", err)
		}
	}
}

// Found in review: a host that accepts another SFTP channel and then never
// answers on it (sshd still answers keepalives) hung openLanes for good.
func TestOpenLanesBounded(t *testing.T) {
	dir := t.TempDir()
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	cs, _ := ssh.NewSignerFromKey(cpriv)
	var nch atomic.Int32
	release := make(chan struct{})
	defer close(release)
	srv := sftptest.Start(t, []ssh.PublicKey{cs.PublicKey()}, "", func(ch ssh.Channel) {
		if nch.Add(1) > 1 {
			<-release // accepted, then silence
			return
		}
		s, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir))
		if err == nil {
			s.Serve()
		}
	})
	host, port := srv.Addr()
	s := dialTest(t, host, port, cs, 2*time.Second)
	c := New(testBuffer(t), Options{ConnectTimeout: time.Second, Lanes: 2})
	done := make(chan int, 1)
	go func() { done <- len(c.lanes(context.Background(), s, 100).lanes) }()
	select {
	case n := <-done:
		if n != 1 {
			t.Errorf("%d lanes, want the one that answers", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening lanes on a host that never answers on them still blocked after 10 s")
	}
}

// Found in review: with as many commands allowed as sshd's MaxSessions left
// beside the lanes, a command started right after another ended was often
// refused (sshd frees a session's slot only after handling the close).
func TestCommandsBesideLanesNotRefused(t *testing.T) {
	key, _ := sshdtest.NewKey(t)
	srv := sshdtest.Start(t, sshdtest.Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, MaxSessions: 10})
	s := dialTest(t, srv.Host, srv.Port, key, 5*time.Second)
	if n := len(s.openLanes(context.Background(), maxLanes)); n != maxLanes {
		t.Fatalf("%d lanes, want %d", n, maxLanes)
	}
	var failed, ok atomic.Int32
	var wg sync.WaitGroup
	for range maxExecs + 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 15 {
				if _, err := s.execOutput(context.Background(), "true", 10*time.Second); err != nil {
					failed.Add(1)
					t.Log(err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of %d commands failed beside %d lanes", failed.Load(), failed.Load()+ok.Load(), maxLanes)
	}
}

// Found in review: on a host allowing 2 to 4 sessions the lanes took them
// all before the hash probe ran, and the whole run verified big files by
// reading them back. The probe runs first.
func TestHashProbeBeforeLanes(t *testing.T) {
	for _, max := range []int{2, 4} {
		key, _ := sshdtest.NewKey(t)
		srv := sshdtest.Start(t, sshdtest.Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, MaxSessions: max})
		s := dialTest(t, srv.Host, srv.Port, key, 5*time.Second)
		c := New(testBuffer(t), Options{})
		lp := c.lanes(context.Background(), s, 100)
		if k := s.HashKind(context.Background()); k != HashByCommand {
			t.Errorf("MaxSessions %d: %d lanes, hash kind %s, want exec", max, len(lp.lanes), k)
		}
	}
}

func testBuffer(t *testing.T) *Buffer {
	t.Helper()
	b, err := OpenBuffer(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// Found in review: pick advanced a counter shared with every other worker
// on each try, so under concurrency one caller's tries need not cover every
// lane, and it fell back to a dead one while another lived.
func TestPickSkipsDeadLaneUnderConcurrency(t *testing.T) {
	live, dead := &Session{}, &Session{}
	p := &lanePicker{lanes: []*Session{dead, live}, dead: make([]atomic.Bool, 2)}
	p.dead[0].Store(true)
	var bad atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 4*runtime.GOMAXPROCS(0); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200000; i++ {
				if p.pick() == dead {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("pick handed out the dead lane %d times while lane 1 was live", n)
	}
}
