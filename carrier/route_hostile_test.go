package carrier

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// hostileJump is a jump host that takes any login and then answers each
// direct-tcpip request with answer (nil: never answers).
func hostileJump(t *testing.T, answer func(ssh.NewChannel)) discovery.Host {
	t.Helper()
	hostKey, _ := sshdtest.NewKey(t)
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(hostKey)
	a := serveLoopback(t, func(c net.Conn) {
		_, chans, reqs, err := ssh.NewServerConn(c, cfg)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		for nc := range chans {
			if answer != nil {
				answer(nc)
			}
		}
	})
	return discovery.Host{Name: "jump", HostName: "127.0.0.1", Port: a.Port, User: "root"}
}

// TestJumpChannelHostile: a jump host that logs the carrier in and then
// never answers its request for a channel to the target is bounded by the
// connect timeout and by the context (unreachable); one that refuses it is
// a refusal naming the jump host, not a host out of reach.
func TestJumpChannelHostile(t *testing.T) {
	signer, _ := sshdtest.NewKey(t)
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
	insecure := func(discovery.Host) ssh.HostKeyCallback { return ssh.InsecureIgnoreHostKey() }
	target := discovery.Host{Name: "target", HostName: "10.255.255.1", Port: 22, User: "root"}

	target.ProxyJump = []discovery.Host{hostileJump(t, nil)}
	wantBounded(t, target, signer, "a jump host stalling the channel")

	target.ProxyJump = []discovery.Host{hostileJump(t, func(nc ssh.NewChannel) { nc.Reject(ssh.Prohibited, "no forwarding here") })}
	_, err := dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), target, ssh.InsecureIgnoreHostKey(), insecure, signers, 10*time.Second, nil)
	})
	var ue *UnreachableError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "jump host jump refused") {
		t.Errorf("a jump host refusing the channel: %v, want a refusal naming it", err)
	}
}

// wantBounded dials h (no host key checked) with a short connect timeout,
// then with a long one and a context cancelled meanwhile, and wants h
// unreachable both times.
func wantBounded(t *testing.T, h discovery.Host, signer ssh.Signer, what string) {
	t.Helper()
	insecure := func(discovery.Host) ssh.HostKeyCallback { return ssh.InsecureIgnoreHostKey() }
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
	var ue *UnreachableError
	_, err := dialOrHang(t, func() (*Session, error) {
		return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), insecure, signers, 500*time.Millisecond, nil)
	})
	if !errors.As(err, &ue) {
		t.Errorf("%s, timeout: %v, want an UnreachableError", what, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err = dialOrHang(t, func() (*Session, error) {
		return dial(ctx, h, ssh.InsecureIgnoreHostKey(), insecure, signers, time.Hour, nil)
	})
	if !errors.As(err, &ue) {
		t.Errorf("%s, cancelled: %v, want an UnreachableError", what, err)
	}
}

// TestProxyCommandHostile: a ProxyCommand that floods standard error and
// then prints garbage, or leaves a child holding its pipes, fails the dial
// with a bounded message, and the dial returns; one that never answers is
// bounded by the connect timeout and by the context.
func TestProxyCommandHostile(t *testing.T) {
	signer, _ := sshdtest.NewKey(t)
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
	h := discovery.Host{Name: "target", HostName: "127.0.0.1", Port: 22, User: "root"}
	for _, cmd := range []string{
		"sh -c 'head -c 8000000 /dev/zero | tr \"\\0\" x >&2; echo garbage; echo; sleep 600'",
		"sh -c 'sleep 600 & exit 0'",
		"sh -c 'sleep 600 >&2 & echo not-ssh; echo'",
	} {
		h.ProxyCommand = cmd
		_, err := dialOrHang(t, func() (*Session, error) {
			return dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, signers, 2*time.Second, nil)
		})
		if err == nil {
			t.Errorf("%s: dialled", cmd)
		} else if len(err.Error()) > 8<<10 {
			t.Errorf("%s: a message of %d bytes", cmd, len(err.Error()))
		}
	}
	h.ProxyCommand = "sleep 600"
	wantBounded(t, h, signer, "a ProxyCommand that never answers")
}

// TestSFTPNeverAnswers: a host that accepts the sftp subsystem and never
// sends its version packet is unreachable within the SFTP start bound,
// and the error says that the reply did not come in time rather than
// quoting the EOF the deadline left behind.
func TestSFTPNeverAnswers(t *testing.T) {
	defer func(d time.Duration) { sftpStartTimeout = d }(sftpStartTimeout)
	sftpStartTimeout = 700 * time.Millisecond
	signer, _ := sshdtest.NewKey(t)
	srv := sftptest.Start(t, []ssh.PublicKey{signer.PublicKey()}, "", func(ch ssh.Channel) {
		io.Copy(io.Discard, ch) // reads the client's init, never replies
	})
	addr, port := srv.Addr()
	h := discovery.Host{Name: "mute", HostName: addr, Port: port, User: "root"}
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
	_, err := dialOrHang(t, func() (*Session, error) {
		return Dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), signers, 500*time.Millisecond, nil)
	})
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "no SFTP reply within 700ms") {
		t.Errorf("dial of a host whose sftp never answers: %v, want unreachable, no SFTP reply within 700ms", err)
	}
}

// TestSlowSFTPStart: a host that logs the carrier in at once and takes
// longer than the connect timeout to start SFTP (sshd runs sftp-server
// through a login shell whose init files are slow) is not given up on.
func TestSlowSFTPStart(t *testing.T) {
	signer, _ := sshdtest.NewKey(t)
	srv := sftptest.Start(t, []ssh.PublicKey{signer.PublicKey()}, "", func(ch ssh.Channel) {
		time.Sleep(1500 * time.Millisecond) // the login shell's init files
		s, err := sftp.NewServer(ch)
		if err == nil {
			s.Serve()
		}
	})
	addr, port := srv.Addr()
	h := discovery.Host{Name: "slowshell", HostName: addr, Port: port, User: "root"}
	signers := func() ([]ssh.Signer, error) { return []ssh.Signer{signer}, nil }
	s, err := dialOrHang(t, func() (*Session, error) {
		return Dial(context.Background(), h, ssh.InsecureIgnoreHostKey(), signers, 500*time.Millisecond, nil)
	})
	if err != nil {
		t.Fatalf("a host whose SFTP starts 1.5 s after login, connect timeout 500ms: %v", err)
	}
	s.Close()
}
