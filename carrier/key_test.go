package carrier_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/sshdtest"
)

func sameKey(a, b ssh.PublicKey) bool { return string(a.Marshal()) == string(b.Marshal()) }

// TestGenerateAndFindKey: the dedicated key is made 0600 (its .pub 0644),
// never replaced, and found before the general-purpose keys; its line for
// authorized_keys is restrict,command="internal-sftp" <key> <comment>.
func TestGenerateAndFindKey(t *testing.T) {
	home := t.TempDir()
	if _, err := carrier.FindKey(home, nil); !errors.Is(err, carrier.ErrNoKey) {
		t.Fatalf("FindKey in an empty home: %v, want ErrNoKey", err)
	}
	general, pem := sshdtest.NewKey(t)
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), pem, 0o600)
	k, err := carrier.FindKey(home, nil)
	if err != nil || k.Dedicated || !sameKey(k.Public, general.PublicKey()) {
		t.Fatalf("FindKey with id_ed25519 only: %+v, %v", k, err)
	}

	gen, err := carrier.GenerateKey(home, "messor@phone")
	if err != nil {
		t.Fatal(err)
	}
	for f, perm := range map[string]os.FileMode{gen.File: 0o600, gen.File + ".pub": 0o644} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != perm {
			t.Errorf("%s: %v, %v; want mode %#o", f, fi, err, perm)
		}
	}
	if gen.File != filepath.Join(home, ".ssh", "id_messor_ed25519") {
		t.Errorf("generated %s", gen.File)
	}
	if _, err := carrier.GenerateKey(home, "again"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second GenerateKey: %v, want fs.ErrExist", err)
	}
	k, err = carrier.FindKey(home, nil)
	if err != nil || !k.Dedicated || !sameKey(k.Public, gen.Public) || k.Comment != "messor@phone" {
		t.Fatalf("FindKey after GenerateKey: %+v, %v", k, err)
	}
	line := k.AuthorizedLine()
	pub, comment, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || !sameKey(pub, gen.Public) || comment != "messor@phone" ||
		strings.Join(options, ",") != `restrict,command="internal-sftp"` {
		t.Errorf("line %q: options %q comment %q, %v", line, options, comment, err)
	}
}

// TestFindKeyPassphrase: a key with a passphrase is reported (messor can
// use it only through ssh-agent), with its public half.
func TestFindKeyPassphrase(t *testing.T) {
	home := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "laptop", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	file := filepath.Join(home, ".ssh", "id_ecdsa") // any name of the list
	os.WriteFile(file, pem.EncodeToMemory(block), 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), []byte("not a key"), 0o600)
	k, err := carrier.FindKey(home, nil)
	want, _ := ssh.NewPublicKey(priv.Public())
	if err != nil || !k.NeedsAgent || k.File != file || !sameKey(k.Public, want) {
		t.Fatalf("FindKey: %+v, %v; want %s, needing ssh-agent", k, err, file)
	}
}

// TestSignersOfferDedicatedKeyFirst: with ~/.ssh/id_messor_ed25519 in
// $HOME, messor offers it before the host's identity files (once).
func TestSignersOfferDedicatedKeyFirst(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	_, pem := sshdtest.NewKey(t)
	other := filepath.Join(home, "other")
	os.WriteFile(other, pem, 0o600)
	gen, err := carrier.GenerateKey(home, "messor@test")
	if err != nil {
		t.Fatal(err)
	}
	signers, done := carrier.Signers(discovery.Host{IdentityFiles: []string{other, gen.File}}, nil)
	defer done()
	ss, err := signers()
	if err != nil || len(ss) != 2 || !sameKey(ss[0].PublicKey(), gen.Public) {
		var got []string
		for _, s := range ss {
			got = append(got, ssh.FingerprintSHA256(s.PublicKey()))
		}
		t.Fatalf("signers %v, %v; want the dedicated key %s first, then the other", got, err, ssh.FingerprintSHA256(gen.Public))
	}
}

// TestGenerateKeyFilesSafely: GenerateKey never writes through a link at
// either path (a symlink at the key refuses as an existing key; one at the
// .pub is replaced, its target untouched), and makes both files or
// neither.
func TestGenerateKeyFilesSafely(t *testing.T) {
	home := t.TempDir()
	sshDir := filepath.Join(home, ".ssh")
	os.MkdirAll(sshDir, 0o700)
	victim := filepath.Join(home, "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o644)
	file := filepath.Join(sshDir, carrier.DedicatedKeyName)

	os.Symlink(filepath.Join(home, "elsewhere"), file) // dangling
	if _, err := carrier.GenerateKey(home, "c"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("symlink at the key: %v, want fs.ErrExist", err)
	}
	if _, err := os.Lstat(filepath.Join(home, "elsewhere")); err == nil {
		t.Error("GenerateKey wrote through a symlink at the key path")
	}
	os.Remove(file)

	os.Symlink(victim, file+".pub")
	if _, err := carrier.GenerateKey(home, "c"); err != nil {
		t.Fatalf("stale .pub symlink: %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("GenerateKey wrote the public key through a symlink at the .pub: the target now holds %q", b)
	}
	if fi, err := os.Lstat(file + ".pub"); err != nil || !fi.Mode().IsRegular() {
		t.Errorf(".pub: %v, %v; want a regular file", fi, err)
	}

	os.Remove(file)
	os.Remove(file + ".pub")
	os.Mkdir(file+".pub", 0o700) // cannot be replaced by a file
	if _, err := carrier.GenerateKey(home, "c"); err == nil {
		t.Error("GenerateKey with a directory at the .pub path: no error")
	}
	if _, err := os.Lstat(file); err == nil {
		t.Error("GenerateKey failed on the .pub but left the private key behind")
	}
}

// TestRestrictedLineRunsNothing: stock sshd given the line messor key
// prints (RestrictedOptions exactly) runs no command and no shell for the
// key, and gives it no pty, where the same key without the options runs
// them (the control: the host would run them otherwise). SFTP still opens.
func TestRestrictedLineRunsNothing(t *testing.T) {
	signer, _ := sshdtest.NewKey(t)
	for _, opts := range []string{"", carrier.RestrictedOptions} {
		srv := sshdtest.Start(t, sshdtest.Options{LoginDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, KeyOptions: opts})
		c, err := ssh.Dial("tcp", srv.Addr, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.FixedHostKey(srv.HostKey)})
		if err != nil {
			t.Fatalf("options %q: %v", opts, err)
		}
		ran := func(f func(*ssh.Session) error) bool {
			s, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var out bytes.Buffer
			s.Stdout, s.Stdin = &out, strings.NewReader("echo sh-$((6*7))\nexit\n")
			f(s)
			s.Wait()
			return strings.Contains(out.String(), "pwned-42") || strings.Contains(out.String(), "sh-42")
		}
		exec := ran(func(s *ssh.Session) error { return s.Start("echo pwned-$((6*7))") })
		shell := ran(func(s *ssh.Session) error { return s.Shell() })
		s, _ := c.NewSession()
		ptyErr := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{})
		s.Close()
		sub, _ := c.NewSession()
		sftpErr := sub.RequestSubsystem("sftp")
		sub.Close()
		c.Close()
		restricted := opts != ""
		if exec == restricted || shell == restricted || (ptyErr != nil) != restricted || sftpErr != nil {
			t.Errorf("options %q: command ran %v, shell ran %v, pty err %v, sftp err %v; want commands, shell and pty only without the options",
				opts, exec, shell, ptyErr, sftpErr)
		}
	}
}
