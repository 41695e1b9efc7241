package carrier

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// TestDedicatedKeyDoesNotCrowdOut: sshd drops a client after MaxAuthTries
// refused keys (6 by default). A host that authorizes the sixth of the
// carrier's other keys, and not the dedicated one offered before them,
// still lets the carrier in; one that authorizes the dedicated key alone
// too; one that authorizes none says so (an *AuthError).
func TestDedicatedKeyDoesNotCrowdOut(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	dedicated, err := GenerateKey(home, "messor@test")
	if err != nil {
		t.Fatal(err)
	}
	files, authorized := otherKeys(t, home, 6)
	dir := t.TempDir()
	srv := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: []ssh.PublicKey{authorized}})
	h := discovery.Host{Name: "h", HostName: srv.Host, Port: srv.Port, User: "root", IdentityFiles: files}
	s, err := dialWithKeys(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, 10*time.Second, nil)
	if err != nil {
		t.Fatalf("the sixth key, authorized, never got its turn: %v", err)
	}
	s.Close()

	nobody, _ := sshdtest.NewKey(t)
	for _, c := range []struct {
		key  ssh.PublicKey
		want bool
	}{{dedicated.Public, true}, {nobody.PublicKey(), false}} {
		srv := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: []ssh.PublicKey{c.key}})
		h := discovery.Host{Name: "h", HostName: srv.Host, Port: srv.Port, User: "root", IdentityFiles: files}
		s, err := dialWithKeys(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, 10*time.Second, nil)
		var ae *AuthError
		if (err == nil) != c.want || (err != nil && !errors.As(err, &ae)) {
			t.Errorf("host authorizing %s: %v; want logged in %v, else an *AuthError", ssh.FingerprintSHA256(c.key), err, c.want)
		}
		if s != nil {
			s.Close()
		}
	}
}

// TestDedicatedKeyDoesNotCrowdOutOnGoServer: the same against a Go SSH
// server (as messor agent is), which counts tries and words its cut-off
// differently.
func TestDedicatedKeyDoesNotCrowdOutOnGoServer(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	if _, err := GenerateKey(home, "messor@test"); err != nil {
		t.Fatal(err)
	}
	files, authorized := otherKeys(t, home, 12) // a Go server forgives 6 refused key queries
	dir := t.TempDir()
	srv := sftptest.Start(t, []ssh.PublicKey{authorized}, "", func(ch ssh.Channel) {
		if s, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir)); err == nil {
			s.Serve()
		}
	})
	host, port := srv.Addr()
	h := discovery.Host{Name: "h", HostName: host, Port: port, User: "root", IdentityFiles: files}
	s, err := dialWithKeys(context.Background(), h, ssh.InsecureIgnoreHostKey(), strictHops, 10*time.Second, nil)
	if err != nil {
		t.Fatalf("the twelfth key, authorized, never got its turn: %v", err)
	}
	s.Close()
}

// otherKeys writes n keys into home as identity files; last is the public
// half of the last one.
func otherKeys(t *testing.T, home string, n int) (files []string, last ssh.PublicKey) {
	for i := range n {
		signer, pem := sshdtest.NewKey(t)
		f := filepath.Join(home, "id_"+strconv.Itoa(i))
		os.WriteFile(f, pem, 0o600)
		files = append(files, f)
		last = signer.PublicKey()
	}
	return files, last
}
