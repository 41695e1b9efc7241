package main

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMainPacesGC checks that the messor binary runs with internal/gcpace
// started: after its first collection, the heap goals the runtime reports
// (GODEBUG=gctrace=1) are near gcpace.Floor (the median: a goal set before
// the pacer's finalizer ran may be lower), not twice a few MiB of live
// heap. The same run with GOGC set, which turns the pacer off, must show
// the default's smaller goals, or the test could not tell the two apart.
func TestMainPacesGC(t *testing.T) {
	bin := buildMessor(t)
	goals := func(env ...string) []int {
		t.Helper()
		cmd := exec.Command(bin, "demo")
		cmd.Dir = t.TempDir()
		// The pacer is off where the user set GOGC or GOMEMLIMIT: the
		// test's own environment must not decide.
		base := slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMEMLIMIT=") || strings.HasPrefix(kv, "GODEBUG=")
		})
		cmd.Env = append(append(base, "GODEBUG=gctrace=1", "TMPDIR="+t.TempDir()), env...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("messor demo %v: %v\n%s", env, err, stderr.String())
		}
		var mb []int
		for _, m := range regexp.MustCompile(`(?m)^gc \d+ .* (\d+) MB goal`).FindAllStringSubmatch(stderr.String(), -1) {
			n, _ := strconv.Atoi(m[1])
			mb = append(mb, n)
		}
		if len(mb) < 2 {
			t.Fatalf("messor demo %v: %d collections in gctrace, want 2 or more to compare:\n%s", env, len(mb), stderr.String())
		}
		return mb[1:]
	}
	const near = 28 // MB: gcpace.Floor is 32 MiB
	if on := goals(); median(on) < near {
		t.Errorf("messor demo: heap goals %v MB after the first collection, want a median of %d or more: the GC pacer is not started", on, near)
	}
	if off := goals("GOGC=100"); median(off) >= near {
		t.Fatalf("with GOGC=100 the goals %v are all %d MB or more: this test cannot tell a paced binary from one that is not", off, near)
	}
}

func median(s []int) int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s[len(s)/2]
}
