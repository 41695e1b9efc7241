package protocol

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBatchCommand: the batch command run by sh archives exactly the
// files named, names a shell or tar could take for something else
// included, each under "./" and its name.
func TestBatchCommand(t *testing.T) {
	dir := t.TempDir()
	names := []string{"d/-rf", "d/it's", "d/$(touch pwned)", "d/a b", "d/*", "d/`id`", "d/--help", "d/é"}
	for _, n := range names {
		os.MkdirAll(filepath.Join(dir, "d"), 0o755)
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "d", "other"), []byte("not named"), 0o644)
	out, err := exec.Command("sh", "-c", BatchCommand(dir, names)).Output()
	if err != nil {
		t.Fatalf("%v", err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	var got []string
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if "./"+string(b) != hd.Name {
			t.Errorf("member %q holds %q", hd.Name, b)
		}
		got = append(got, hd.Name)
	}
	if len(got) != len(names) {
		t.Errorf("members %q, want the %d named", got, len(names))
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("a name ran as a command")
	}
}
