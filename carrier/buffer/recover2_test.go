package buffer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// recoverUntil runs Recover on dir in a child process and returns
// once it has read at least n bytes (of the objects it verifies, from
// /proc/PID/io), with the process and how it will end.
func recoverUntil(t *testing.T, dir string, n int64) (*os.Process, <-chan error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecoverChild$")
	cmd.Env = append(os.Environ(), recoverChildEnv+"="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	read := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", cmd.Process.Pid))
		if err != nil {
			t.Fatalf("how much recover has read: %v", err)
		}
		var r int64
		fmt.Sscanf(string(b), "rchar: %d", &r)
		return r
	}
	for deadline := time.Now().Add(30 * time.Second); read() < n; time.Sleep(100 * time.Microsecond) {
		select {
		case err := <-exited:
			t.Fatalf("recover ended (%v) before it read %d bytes", err, n)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("recover never began")
		}
	}
	return cmd.Process, exited
}

// startRecover runs Recover on dir in a child process and stops it
// (SIGSTOP) once it has read n bytes; cont resumes it and returns how it
// ended.
func startRecover(t *testing.T, dir string, n int64) (cont func() error) {
	t.Helper()
	p, exited := recoverUntil(t, dir, n)
	p.Signal(syscall.SIGSTOP)
	return func() error {
		p.Signal(syscall.SIGCONT)
		return <-exited
	}
}

// Two recovers of a buffer whose index.db is missing: the second is refused
// while the first works (no index.db to lock: each would remove the
// other's half-built index.db.rebuild and rename its own over the other's).
func TestRecoverTwiceAtOnceNoIndex(t *testing.T) {
	dir := t.TempDir()
	ents := carriedBuffer(t, dir, 3, 16<<20)
	os.Remove(filepath.Join(dir, "index.db"))
	cont := startRecover(t, dir, 8<<20)
	_, err := Recover(dir)
	if !errors.Is(err, ErrBusy) {
		t.Errorf("a second recover while the first works: %v, want ErrBusy", err)
	}
	if err := cont(); err != nil {
		t.Fatalf("the first recover: %v", err)
	}
	openCarrying(t, dir, len(ents))
}

// A recover while a run has the buffer open is refused and changes
// nothing; a run or a status while a recover works is refused (busy, or
// the index missing), and the recover then finishes.
func TestRecoverAndRunsExclude(t *testing.T) {
	dir := t.TempDir()
	ents := carriedBuffer(t, dir, 3, 16<<10)
	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "index.db"))
	if _, err := Recover(dir); !errors.Is(err, ErrBusy) {
		t.Errorf("recover while a run has the buffer: %v, want ErrBusy", err)
	}
	b.Close()
	if after, _ := os.ReadFile(filepath.Join(dir, "index.db")); string(after) != string(before) {
		t.Errorf("the refused recover changed the index")
	}
	for _, n := range []string{"index.db.rebuild", QuarantineDir} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			t.Errorf("the refused recover left %s", n)
		}
	}

	for _, missing := range []bool{false, true} {
		dir := t.TempDir()
		carried := carriedBuffer(t, dir, 3, 16<<20)
		if missing {
			os.Remove(filepath.Join(dir, "index.db"))
		} else {
			damageIndex(t, dir)
		}
		cont := startRecover(t, dir, 8<<20)
		if _, err := Open(dir, 1<<40); !errors.Is(err, ErrBusy) && !errors.Is(err, ErrIndexCorrupt) {
			t.Errorf("index missing %v: a run while recover works: %v, want busy or corrupt", missing, err)
		}
		if _, err := OpenReadOnly(dir); !errors.Is(err, ErrBusy) && !errors.Is(err, ErrIndexCorrupt) {
			t.Errorf("index missing %v: status while recover works: %v, want busy or corrupt", missing, err)
		}
		if err := cont(); err != nil {
			t.Fatalf("index missing %v: recover: %v", missing, err)
		}
		carries(t, dir, len(carried))
	}
	carries(t, dir, len(ents))
}
