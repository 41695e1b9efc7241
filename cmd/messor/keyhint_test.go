package main

import (
	"context"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sshdtest"
)

// Key trouble says which keys were tried and why each was not usable, and
// points at authorized_keys only when a key was offered and refused.
func TestKeyTroubleHints(t *testing.T) {
	w := newWorld(t, "alpha")
	t.Setenv("SSH_AUTH_SOCK", "")
	w.home.WriteHostsFile("alpha")
	ctx := context.Background()
	id := filepath.Join(w.home.Dir, ".ssh", "id_ed25519")

	// Only a passphrase-protected key, no ssh-agent, no terminal.
	lockKey(t, w, "secret")
	code, out, errs := w.messor(ctx, "pickup")
	if code != 1 || !strings.Contains(out+errs, "id_ed25519 is passphrase-protected: add it to ssh-agent with ssh-add") || strings.Contains(out+errs, "authorized_keys") {
		t.Errorf("passphrase-protected key: exit %d\n%s%s", code, out, errs)
	}

	// No key at all.
	os.Remove(id)
	code, out, errs = w.messor(ctx, "pickup")
	if code != 1 || !strings.Contains(out+errs, "no usable SSH key") || !strings.Contains(out+errs, "id_ed25519 does not exist") || !strings.Contains(out+errs, "messor key --generate") {
		t.Errorf("no key: exit %d\n%s%s", code, out, errs)
	}

	// A usable key the host does not accept: named, and authorized_keys hinted.
	_, other := sshdtest.NewKey(t)
	os.WriteFile(id, other, 0o600)
	code, out, errs = w.messor(ctx, "pickup")
	if code != 1 || !strings.Contains(out+errs, "offered ~/.ssh/id_ed25519 (SHA256:") || !strings.Contains(out+errs, "authorized_keys") {
		t.Errorf("refused key: exit %d\n%s%s", code, out, errs)
	}
}

// On a terminal, a passphrase-protected key is unlocked by asking for its
// passphrase, as ssh does: the real binary runs under script(1) for a pty.
func TestPassphrasePromptOnTerminal(t *testing.T) {
	bin := buildMessor(t)
	w := newWorld(t, "alpha")
	t.Setenv("SSH_AUTH_SOCK", "")
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", map[string][]byte{"x.txt": []byte("unlocked\n")})
	lockKey(t, w, "secret")
	out, err := onTerminal(t, "secret\n", bin, "--settle", "0", "pickup")
	if err != nil || !strings.Contains(out, "Enter passphrase for key '"+w.home.Dir+"/.ssh/id_ed25519': ") || !strings.Contains(out, "pickup: alpha: picked up 1 file(s)") {
		t.Fatalf("pickup on a terminal: %v\n%s", err, out)
	}
}

// buildMessor builds this command into a temporary directory. Call it
// before newWorld, whose $HOME would hide the build cache.
func buildMessor(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "messor")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// onTerminal runs bin with args under script(1), so that it has a
// terminal, feeding it stdin; it returns what the terminal showed.
func onTerminal(t *testing.T, stdin string, bin string, args ...string) (string, error) {
	t.Helper()
	scriptBin, err := exec.LookPath("script")
	if err != nil {
		t.Fatalf("this test needs script(1) from util-linux for a terminal: %v", err)
	}
	cmd := exec.Command(scriptBin, "-qec", bin+" "+strings.Join(args, " "), "/dev/null")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lockKey rewrites w's carrier key file with passphrase pass.
func lockKey(t *testing.T, w *world, pass string) {
	t.Helper()
	raw, err := ssh.ParseRawPrivateKey(w.home.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(raw, "carrier", []byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.home.Dir, ".ssh", "id_ed25519"), pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}
