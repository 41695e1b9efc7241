package agent

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Found in review. A FIFO placed in Root by someone on the host (not the carrier). Listing it
// as a directory must fail promptly, not block the agent in open(2).
func TestOpendirOnFIFODoesNotBlock(t *testing.T) {
	e := newEnv(t)
	stop := e.start()
	fifo := e.inRoot("inbox/fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal("mkfifo:", err)
	}
	// Release whatever may end up blocked in open(2) when the test ends.
	t.Cleanup(func() {
		for i := 0; i < 64; i++ {
			f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				break
			}
			f.Close()
		}
	})
	c := e.sftp()
	done := make(chan error, 1)
	go func() { _, err := c.ReadDir("/messor/inbox/fifo"); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("ReadDir on a FIFO succeeded")
		}
	case <-time.After(3 * time.Second):
		t.Error("ReadDir on a FIFO still blocked after 3s: a worker is stuck in open(2)")
		// Shutdown cannot finish either while that open is stuck.
		errc := make(chan error, 1)
		go func() { errc <- stop() }()
		select {
		case err := <-errc:
			t.Logf("stop: %v", err)
		case <-time.After(12 * time.Second):
			t.Error("Serve did not return")
		}
	}
}

// TOCTOU between openRegular's Stat and OpenFile: a FIFO renamed over a
// regular file in between (the carrier can do it itself with posix-rename)
// makes the open block forever.
func TestOpenRegularRaceWithFIFO(t *testing.T) {
	root, top := testTree(t)
	dir := filepath.Join(top, "outbox")
	c := newConfinedFS(root, discardLogger())
	reg := filepath.Join(dir, "a")
	fifo := filepath.Join(dir, "f")
	stopSwap := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for {
			select {
			case <-stopSwap:
				return
			default:
			}
			os.WriteFile(reg+".tmp", nil, 0o644)
			os.Rename(reg+".tmp", reg)
			syscall.Mkfifo(fifo, 0o644)
			os.Rename(fifo, reg)
		}
	}()
	defer func() {
		close(stopSwap)
		<-swapped
	}()
	deadline := time.After(3 * time.Second)
	for i := 0; ; i++ {
		done := make(chan error, 1)
		go func() {
			o, err := c.openRegular("open", "/messor/outbox/a", os.O_RDONLY, false)
			if err == nil {
				o.Close()
			}
			done <- err
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			// unblock it
			if f, err := os.OpenFile(reg, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
			t.Fatalf("openRegular blocked on a FIFO swapped in after its Stat (attempt %d)", i)
		case <-deadline:
			return // never blocked in 3 s of swapping
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Found in review: an authenticated carrier must not open any number of
// session channels on one connection and fill each one's 2 MiB receive
// window without ever asking for a subsystem. (sshd caps sessions at
// MaxSessions=10.)
func TestSessionChannelsBounded(t *testing.T) {
	e := newEnv(t)
	e.start()
	c := e.dial()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 100
	buf := make([]byte, 2<<20)
	opened := 0
	for i := 0; i < n; i++ {
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			break
		}
		go ssh.DiscardRequests(reqs)
		opened++
		if _, err := ch.Write(buf); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("opened %d idle session channels; heap grew by %d MiB (client+agent in one process)", opened, grown>>20)
	if opened > 10 {
		t.Errorf("agent accepted %d session channels on one connection (want a small cap, as sshd's MaxSessions)", opened)
	}
}

// Found in review: a certificate line pasted into authorized_keys (without
// cert-authority) must not be accepted as a plain key, its validity,
// principals and critical options unchecked; sshd never accepts a
// certificate without a matching cert-authority line.
func TestListedCertificateRefused(t *testing.T) {
	e := newEnv(t)
	ca := newSigner(t)
	cert := &ssh.Certificate{
		Key:             e.carrier.PublicKey(),
		CertType:        ssh.UserCert,
		ValidPrincipals: []string{"someone-else"},
		ValidAfter:      1,
		ValidBefore:     2, // expired in 1970
		Permissions: ssh.Permissions{CriticalOptions: map[string]string{
			"source-address": "192.0.2.1/32", "force-command": "/bin/false"}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	e.writeAuthorizedKeys(string(ssh.MarshalAuthorizedKey(cert)))
	e.start()
	cs, err := ssh.NewCertSigner(cert, e.carrier)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := e.dialWith(cs); err == nil {
		c.Close()
		t.Error("login with an expired, wrong-principal, wrong-source certificate listed in authorized_keys succeeded")
	}
}

// From the security review: a client could hold any number of files open
// in a session (and over many sessions), using up the agent's file
// descriptors. Opens beyond a cap per session and one for the whole agent
// are refused; closing a file makes room again.
func TestOpenFilesBounded(t *testing.T) {
	oldS, oldA := maxOpenPerSession, maxOpenAgent
	maxOpenPerSession, maxOpenAgent = 8, 12
	t.Cleanup(func() { maxOpenPerSession, maxOpenAgent = oldS, oldA })
	e := newEnv(t)
	e.start()
	openAll := func(c *sftp.Client, prefix string, n int) (files []*sftp.File, refused error) {
		for i := range n {
			f, err := c.Create(fmt.Sprintf("messor/outbox/%s-%d", prefix, i))
			if err != nil {
				return files, err
			}
			files = append(files, f)
		}
		return files, nil
	}
	c1 := e.sftp()
	files1, err := openAll(c1, "a", 9)
	if err == nil || len(files1) != 8 {
		t.Fatalf("session 1: %d files open, 9th: %v (want 8 and a refusal)", len(files1), err)
	}
	files1[0].Close()
	if f, err := c1.Create("messor/outbox/a-again"); err != nil {
		t.Fatalf("after a close, an open is refused: %v", err)
	} else {
		files1[0] = f
	}
	c2 := e.sftp()
	files2, err := openAll(c2, "b", 8)
	if err == nil || len(files2) != 4 {
		t.Fatalf("session 2: %d files open with 8 open elsewhere, next: %v (want 4 under the agent's 12, then a refusal)", len(files2), err)
	}
	for _, f := range append(files1, files2...) {
		f.Close()
	}
	// Everything closed: both sessions can open again.
	for _, c := range []*sftp.Client{c1, c2} {
		fs, err := openAll(c, "c", 6)
		if err != nil {
			t.Fatalf("after closing everything: %v", err)
		}
		for _, f := range fs {
			f.Close()
		}
	}
}

// From the security review: like sshd's StrictModes, an authorized_keys
// file that others could write, or that another user owns, lets nobody in
// (whoever can write it could add a key), and says why.
func TestAuthorizedKeysStrictModes(t *testing.T) {
	e := newEnv(t)
	e.start()
	if _, err := e.dialWith(e.carrier); err != nil {
		t.Fatalf("login with a 0600 authorized_keys: %v", err)
	}
	if err := os.Chmod(e.authKeys, 0o666); err != nil {
		t.Fatal(err)
	}
	if c, err := e.dialWith(e.carrier); err == nil {
		c.Close()
		t.Error("logged in although authorized_keys is writable by everyone")
	}
	if !strings.Contains(e.log.String(), "writable by group or others") {
		t.Error("the log does not say why logins are refused")
	}
	os.Chmod(e.authKeys, 0o644)
	if os.Geteuid() == 0 {
		if err := os.Chown(e.authKeys, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		if c, err := e.dialWith(e.carrier); err == nil {
			c.Close()
			t.Error("logged in although authorized_keys belongs to another user")
		}
		os.Chown(e.authKeys, 0, 0)
	}
	if c, err := e.dialWith(e.carrier); err != nil {
		t.Errorf("login after the file was fixed: %v", err)
	} else {
		c.Close()
	}
}
