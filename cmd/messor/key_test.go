package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/internal/testenv"
)

// TestKeyGenerateRestricted: messor key --generate makes the dedicated key
// and prints the restricted line; a host whose authorized_keys holds only
// that line (the general key is not authorized there) serves a pickup, so
// messor logs in with the dedicated key. messor key then prints the same
// line again, and --generate never replaces the key.
func TestKeyGenerateRestricted(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	code, out, errs := w.messor(ctx, "key")
	if code != 0 || !strings.Contains(errs, "id_ed25519") || !strings.Contains(errs, "--generate") {
		t.Errorf("key with the general key only: exit %d, stderr:\n%s", code, errs)
	}
	code, out, errs = w.messor(ctx, "key", "--generate")
	if code != 0 {
		t.Fatalf("key --generate: exit %d\n%s%s", code, out, errs)
	}
	line := strings.TrimSpace(out)
	pub, _, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || strings.Join(options, ",") != `restrict,command="internal-sftp"` || strings.Count(out, "\n") != 1 {
		t.Fatalf("key --generate printed %q (options %q, %v); want one restricted authorized_keys line", out, options, err)
	}
	if !strings.Contains(errs, "reading") || !strings.Contains(errs, "no shell") {
		t.Errorf("key --generate does not say what the line gives up:\n%s", errs)
	}

	dir := testenv.NewHostDir(t)
	abs, _ := filepath.Abs(dir)
	s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: []ssh.PublicKey{pub},
		KeyOptions: fmt.Sprintf(`restrict,command="internal-sftp -d %s"`, abs)})
	w.home.AddHost("alpha", s, true)
	w.dirs["alpha"] = dir
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", map[string][]byte{"a.txt": []byte("carried\n")})
	code, out, errs = w.messor(ctx, "pickup")
	if code != 0 || !strings.Contains(out, "picked up 1 file(s)") {
		t.Fatalf("pickup over the dedicated restricted key: exit %d\n%s%s", code, out, errs)
	}

	code, again, _ := w.messor(ctx, "key")
	if code != 0 || strings.TrimSpace(again) != line {
		t.Errorf("key after --generate: exit %d, %q; want %q", code, again, line)
	}
	before, _ := os.ReadFile(filepath.Join(w.home.Dir, ".ssh", "id_messor_ed25519"))
	code, _, errs = w.messor(ctx, "key", "--generate")
	after, _ := os.ReadFile(filepath.Join(w.home.Dir, ".ssh", "id_messor_ed25519"))
	if code == 0 || string(before) != string(after) {
		t.Errorf("second --generate: exit %d, key replaced %v\n%s", code, string(before) != string(after), errs)
	}
}
