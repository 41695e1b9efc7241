package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kevinburke/ssh_config"
	"github.com/messor-sync/messor/internal/sshdtest"
	"golang.org/x/crypto/ssh"
)

func TestHome(t *testing.T) {
	h := NewHome(t)
	fi, err := os.Stat(filepath.Join(h.Dir, ".ssh", "id_ed25519"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v, %v; want mode 0600", fi, err)
	}
	k, err := ssh.ParsePrivateKey(h.KeyPEM)
	if err != nil || !bytes.Equal(k.PublicKey().Marshal(), h.Key.PublicKey().Marshal()) {
		t.Fatalf("KeyPEM does not hold Key: %v", err)
	}

	h.AddHostAddr("gone", "127.0.0.1", 9)
	h.WriteHostsFile("alpha", "gone")
	if got, _ := os.ReadFile(filepath.Join(h.Dir, ".messor_pickup_hosts")); string(got) != "alpha\ngone\n" {
		t.Errorf("hosts file = %q", got)
	}
	f, err := os.Open(filepath.Join(h.Dir, ".ssh", "config"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := ssh_config.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"HostName":           "127.0.0.1",
		"Port":               "9",
		"User":               "root",
		"IdentityFile":       filepath.Join(h.Dir, ".ssh", "id_ed25519"),
		"UserKnownHostsFile": filepath.Join(h.Dir, ".ssh", "known_hosts"),
	} {
		if got, _ := cfg.Get("gone", key); got != want {
			t.Errorf("config %s for gone = %q; want %q", key, got, want)
		}
	}
}

// TestHomeWithOpenSSH checks the generated files against OpenSSH's own
// client: a trusted host logs in, an untrusted one fails host key checking.
func TestHomeWithOpenSSH(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatal("ssh client not found; install it with `apt-get install openssh-client`")
	}
	h := NewHome(t)
	login := NewHostDir(t)
	opts := sshdtest.Options{LoginDir: login, AuthorizedKeys: []ssh.PublicKey{h.Key.PublicKey()}}
	h.AddHost("trusted", sshdtest.Start(t, opts), true)
	h.AddHost("stranger", sshdtest.Start(t, opts), false)

	// stdout and stderr are read apart: the login shell on the host may
	// print on stderr (pyenv's rehash lock under parallel logins) before
	// the command's own output.
	run := func(name string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sshBin, "-F", filepath.Join(h.Dir, ".ssh", "config"),
			"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", name, "echo ok")
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return out.String(), errOut.String(), err
	}
	if out, errOut, err := run("trusted"); err != nil || out != "ok\n" {
		t.Errorf("ssh trusted: stdout %q, stderr %q, %v", out, errOut, err)
	}
	if out, errOut, err := run("stranger"); err == nil || !strings.Contains(errOut, "verification failed") {
		t.Errorf("ssh stranger: stdout %q, stderr %q, %v; want host key verification to fail", out, errOut, err)
	}
}

func TestNewHostDir(t *testing.T) {
	dir := NewHostDir(t)
	for _, d := range []string{"messor/outbox", "messor/inbox"} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v, %v", d, fi, err)
		}
	}
}

func TestTree(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{
		"a":                  []byte("one"),
		"sub/b":              []byte(""),
		"sub/deep/.messor-c": []byte("3"),
	}
	WriteTree(t, dir, files)
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	got := ReadTree(t, dir)
	if !reflect.DeepEqual(got, files) {
		t.Errorf("ReadTree = %q; want %q", got, files)
	}
	if got := ReadTree(t, filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("ReadTree(missing) = %q", got)
	}
}
