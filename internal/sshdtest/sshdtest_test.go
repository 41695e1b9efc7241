package sshdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func dial(t *testing.T, s *Server, key ssh.Signer) (*ssh.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(conn, s.Addr, &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	client := ssh.NewClient(c, chans, reqs)
	t.Cleanup(func() { client.Close() })
	return client, nil
}

// runStdout runs cmd and returns only its standard output: a login shell's
// init files may print to stderr (pyenv's rehash does when another shell
// holds its lock), which is not the command's answer.
func runStdout(t *testing.T, c *ssh.Client, cmd string) (string, error) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	timer := time.AfterFunc(10*time.Second, func() { c.Close() })
	defer timer.Stop()
	out, err := sess.Output(cmd)
	return string(out), err
}

func TestServer(t *testing.T) {
	for _, c := range []struct {
		name       string
		noExec     bool
		keyOptions string // %s: the login directory
	}{
		{"exec", false, ""},
		{"noexec", true, ""},
		{"restricted key", false, `restrict,command="internal-sftp -d %s"`},
	} {
		noExec := c.noExec || c.keyOptions != ""
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			key, _ := NewKey(t)
			login := t.TempDir()
			opts := Options{LoginDir: login, AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, NoExec: c.noExec}
			if c.keyOptions != "" {
				opts.KeyOptions = fmt.Sprintf(c.keyOptions, login)
			}
			s := Start(t, opts)
			if s.Host != "127.0.0.1" || s.Port == 0 || s.Addr != net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) {
				t.Fatalf("bad address: Host %q Port %d Addr %q", s.Host, s.Port, s.Addr)
			}

			c, err := dial(t, s, key)
			if err != nil {
				t.Fatal(err)
			}
			sftpRoundTrip(t, c, login)

			out, err := runStdout(t, c, "echo hi")
			if noExec {
				if out == "hi\n" || err == nil {
					t.Errorf("exec ran a command on a server offering only SFTP: %q, %v", out, err)
				}
				t.Logf("exec on a server offering only SFTP: %q, %v", out, err)
			} else if err != nil || out != "hi\n" {
				t.Errorf("exec echo hi = %q, %v; want \"hi\\n\"", out, err)
			} else if out, _ := runStdout(t, c, "echo $PYENV_REHASH_TIMEOUT"); out != "0\n" {
				t.Errorf("PYENV_REHASH_TIMEOUT in a session = %q, want 0 (a stale pyenv lock would hold every login 60 s)", out)
			}
		})
	}
}

func sftpRoundTrip(t *testing.T, c *ssh.Client, login string) {
	t.Helper()
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	want := []byte("carried across\n")
	if err := sc.MkdirAll("messor/outbox"); err != nil {
		t.Fatal(err)
	}
	f, err := sc.Create("messor/outbox/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := sc.Stat("messor/outbox/x")
	if err != nil || fi.Size() != int64(len(want)) {
		t.Fatalf("stat: %v, %v", fi, err)
	}
	f, err = sc.Open("messor/outbox/x")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %q, %v; want %q", got, err, want)
	}
	onDisk, err := os.ReadFile(filepath.Join(login, "messor", "outbox", "x"))
	if err != nil || !bytes.Equal(onDisk, want) {
		t.Fatalf("file in login dir: %q, %v; want %q", onDisk, err, want)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	t.Parallel()
	good, _ := NewKey(t)
	bad, _ := NewKey(t)
	s := Start(t, Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{good.PublicKey()}})
	if _, err := dial(t, s, bad); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("login with an unauthorised key: %v; want an authentication error", err)
	}
}

func TestRestartSameAddress(t *testing.T) {
	t.Parallel()
	key, _ := NewKey(t)
	opts := Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}}
	s := Start(t, opts)
	c, err := dial(t, s, key)
	if err != nil {
		t.Fatal(err)
	}
	line := s.KnownHostsLine()
	if !strings.HasPrefix(line, "[127.0.0.1]:"+strconv.Itoa(s.Port)+" ssh-ed25519 ") {
		t.Errorf("KnownHostsLine = %q", line)
	}
	known := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(known, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(known)
	if err != nil {
		t.Fatal(err)
	}

	s.Stop()
	if _, err := runStdout(t, c, "true"); err == nil {
		t.Error("connection survived Stop")
	}

	// Same port, new key: known_hosts must now report a changed key.
	opts.Port = s.Port
	s2 := Start(t, opts)
	if s2.Addr != s.Addr || bytes.Equal(s2.HostKey.Marshal(), s.HostKey.Marshal()) {
		t.Fatalf("restart: addr %s key %s; want addr %s and a new key", s2.Addr, ssh.FingerprintSHA256(s2.HostKey), s.Addr)
	}
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: s.Port}
	var ke *knownhosts.KeyError
	if err := check(s2.Addr, tcp, s2.HostKey); !errors.As(err, &ke) || len(ke.Want) == 0 {
		t.Errorf("changed key: %v; want a KeyError with Want set", err)
	}
	if err := check(s.Addr, tcp, s.HostKey); err != nil {
		t.Errorf("original key: %v", err)
	}
}

// TestStalePyenvLockCleared: a pyenv rehash lock left over 30 s ago is
// removed when a server starts; a fresh one (a rehash under way) is not.
func TestStalePyenvLockCleared(t *testing.T) {
	root := t.TempDir()
	t.Setenv("PYENV_ROOT", root)
	lock := filepath.Join(root, "shims", ".pyenv-shim")
	os.MkdirAll(filepath.Dir(lock), 0o755)
	for _, c := range []struct {
		age  time.Duration
		gone bool
	}{{time.Minute, true}, {0, false}} {
		os.WriteFile(lock, nil, 0o644)
		at := time.Now().Add(-c.age)
		os.Chtimes(lock, at, at)
		clearStalePyenvLock()
		if _, err := os.Stat(lock); (err != nil) != c.gone {
			t.Errorf("lock %s old: removed %v, want %v", c.age, err != nil, c.gone)
		}
	}
}
