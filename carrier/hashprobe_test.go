package carrier

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/messor-sync/messor/protocol"
)

// TestHashProbeOneLinePerTool runs the probe in a local sh whose PATH holds
// only some of the hash tools: the tool chosen is always one that is there
// (a tool's output and the line after it once shifted the answers, so a
// host with only sha256sum was told to use openssl, and one with only
// openssl used none).
func TestHashProbeOneLinePerTool(t *testing.T) {
	for _, c := range []struct {
		name  string
		tools []string
		want  string
	}{
		{"both", []string{"openssl", "sha256sum"}, protocol.HashTools[0]},
		{"openssl only", []string{"openssl"}, protocol.HashTools[0]},
		{"sha256sum only", []string{"sha256sum"}, protocol.HashTools[1]},
		{"neither", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			bin := t.TempDir()
			for _, tool := range append([]string{"head", "printf"}, c.tools...) {
				p, err := exec.LookPath(tool)
				if err != nil {
					t.Fatalf("this machine lacks %s: %v", tool, err)
				}
				if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
					t.Fatal(err)
				}
			}
			sh, err := exec.LookPath("sh")
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sh, "-c", hashProbe())
			cmd.Env = []string{"PATH=" + bin}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			if got := probedTool(out); got != c.want {
				t.Fatalf("tools %v: chose %q, want %q (output %q)", c.tools, got, c.want, out)
			}
		})
	}
}
