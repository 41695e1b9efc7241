package buffer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// A recover on a full disk fails without touching the index in place,
// which still opens with everything it carried, and gives back what its
// half-built index took.
// Left free: none (the new index cannot be made) and some (it is made,
// its transaction fails).
func TestRecoverDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs: run it as root")
	}
	for _, free := range []int64{0, 48 << 10} {
		t.Run(fmt.Sprint(free), func(t *testing.T) { recoverDiskFull(t, free) })
	}
}

func recoverDiskFull(t *testing.T, free int64) {
	dir := filepath.Join(t.TempDir(), "buf")
	os.MkdirAll(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	b, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	datas := map[string][]byte{}
	for i := range 300 {
		datas[fmt.Sprintf("dir%d/file-with-a-longish-name-%d.txt", i%7, i)] = []byte(fmt.Sprintf("content %d\n", i))
	}
	ents := commitBatch(t, b, datas)
	b.Close()
	before, err := os.ReadFile(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	// Fill the disk.
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	if st, _ := f.Stat(); free > 0 {
		f.Truncate(st.Size() - free)
	}
	f.Close()

	rep, err := Recover(dir)
	t.Logf("recover on a full disk: %+v, %v", rep, err)
	if err == nil {
		t.Fatal("recover on a full disk succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, "index.db"))
	if string(after) != string(before) {
		t.Errorf("the index in place changed")
	}
	if _, err := os.Stat(filepath.Join(dir, "index.db.rebuild")); err == nil {
		t.Errorf("the failed recover left index.db.rebuild taking space on the full disk")
	}
	openCarrying(t, dir, len(ents))
}
