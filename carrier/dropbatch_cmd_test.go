package carrier

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDropBatchCommands runs the group commands in a local sh over
// partials with names a shell or sha256sum could take for something else:
// the group checks out only when every partial matches, and the check of
// each says which did, by position.
func TestDropBatchCommands(t *testing.T) {
	dir := t.TempDir()
	names := []string{"a b", "-rf", "it's", "x: OK", `$(touch pwned)`, "*", `"q"`, "é"}
	var g []*dropItem
	for i, n := range names {
		data := []byte(strings.Repeat(n, i+1))
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		g = append(g, &dropItem{partial: n, want: hex.EncodeToString(sum[:]), perm: 0o644, size: int64(len(data))})
	}
	sh := func(cmd string) string {
		c := exec.Command("sh", "-c", cmd)
		c.Dir = dir
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := sh(dropBatchCheck(dir, g)); got != "ok" {
		t.Errorf("all match: %q, want ok", got)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "x: OK")); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v after the check, want 0644", fi.Mode().Perm())
	}
	// One changed, one gone.
	os.WriteFile(filepath.Join(dir, "it's"), []byte("changed"), 0o600)
	os.Remove(filepath.Join(dir, "x: OK"))
	if got := sh(dropBatchCheck(dir, g)); got != "n" {
		t.Errorf("one changed, one gone: %q, want n", got)
	}
	out := sh(dropBatchEach("sha256sum", dir, g))
	v, err := parseDropBatch([]byte(out), len(g))
	if err != nil || string(v) != "yynnyyyy" {
		t.Errorf("each: %q err %v, want yynnyyyy", v, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("a name ran as a command")
	}
	for _, bad := range []string{"", "y\ny\n", "y\nq\nend", "y\ny\nen"} {
		if _, err := parseDropBatch([]byte(bad), 2); err == nil {
			t.Errorf("reply %q taken", bad)
		}
	}
}
