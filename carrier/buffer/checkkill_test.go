package buffer

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openChildEnv names the buffer that TestOpenChild opens: set, the test
// binary is a run opening the buffer, to be killed.
const openChildEnv = "MESSOR_TEST_OPEN_BUFFER"

// TestOpenChild opens a buffer (its check) in a process of its own, for
// TestKilledOpenCheck to kill. It does nothing in a normal run.
func TestOpenChild(t *testing.T) {
	dir := os.Getenv(openChildEnv)
	if dir == "" {
		return
	}
	b, err := Open(dir, 1<<40)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b.Close()
	os.Exit(0)
}

// An open whose check has much to do (an index that lost every record
// file, objects nothing names, a record file marked for a rewrite) killed
// at seeded moments, opened again each time: every carried file stays
// carried, its object and record in place; what nothing names stays in
// objects/ or quarantine/.
func TestKilledOpenCheck(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	var ents []Entry
	for i := range 40 {
		ents = append(ents, commitBatch(t, b, map[string][]byte{
			fmt.Sprintf("f%d-a", i): []byte(strings.Repeat(fmt.Sprint(i), 3000)),
			fmt.Sprintf("f%d-b", i): []byte(fmt.Sprintf("small %d\n", i)),
		})...)
	}
	b.Close()
	var orphans []string
	for i := range 30 {
		data := []byte(fmt.Sprintf("named by nothing %d\n", i))
		e := testEntry("x", data)
		p := (&Buffer{dir: dir}).ObjectPath(e.Hash)
		os.WriteFile(p, data, 0o600)
		orphans = append(orphans, filepath.Base(p))
	}
	r := rand.New(rand.NewSource(7))
	for round := range 12 {
		if round%3 == 0 {
			emptyIndex(t, dir) // it lost everything but its buckets
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestOpenChild$")
		cmd.Env = append(os.Environ(), openChildEnv+"="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(r.Intn(30000)+(round%3)*40000) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		n := -1
		if rb, err := OpenReadOnly(dir); err == nil {
			got, _ := rb.Entries()
			n = len(got)
			rb.Close()
		}
		q, _ := os.ReadDir(filepath.Join(dir, QuarantineDir))
		t.Logf("round %d: %v; %d entries indexed, %d in quarantine", round, err, n, len(q))
		intact(t, dir, ents, fmt.Sprintf("round %d", round))
		for _, o := range orphans {
			_, e1 := os.Stat((&Buffer{dir: dir}).ObjectPath(o))
			_, e2 := os.Stat(filepath.Join(dir, QuarantineDir, o))
			if e1 != nil && e2 != nil {
				t.Fatalf("round %d: object %s named by nothing is gone", round, o)
			}
		}
	}
	openCarrying(t, dir, len(ents))
	intact(t, dir, ents, "at the end")
}
