//go:build linux

package carrier

import (
	"os"

	"golang.org/x/sys/unix"
)

// durable makes files and directory entries under dir reach the disk. On
// Linux one syncfs of the buffer's filesystem does it for a whole batch,
// where an fsync per file and directory would cost a disk flush each.
func durable(dir string, files, dirs []string) error {
	if len(files) < 4 {
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

// startWriteback asks the kernel to start writing a range of f to disk,
// without waiting.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
