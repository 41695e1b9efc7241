//go:build linux

package durable

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Sync makes files and directory entries under dir reach the disk. On
// Linux one syncfs of the buffer's filesystem does it for a whole batch,
// where an fsync per file and directory would cost a disk flush each.
func Sync(dir string, files, dirs []string) error {
	if len(files) < 4 || !syncfsReportsErrors() {
		return fsyncAll(files, dirs)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fsyncAll(files, dirs)
	}
	return nil
}

// StartWriteback asks the kernel to start writing a range of f to disk,
// without waiting.
func StartWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

var (
	syncfsOnce sync.Once
	syncfsOK   bool
)

// syncfsReportsErrors: before Linux 5.8, syncfs returned 0 even when
// writeback failed (many phones run older kernels); there, fsync each file.
func syncfsReportsErrors() bool {
	syncfsOnce.Do(func() {
		var u unix.Utsname
		if unix.Uname(&u) != nil {
			return
		}
		var major, minor int
		fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
		syncfsOK = major > 5 || major == 5 && minor >= 8
	})
	return syncfsOK
}
