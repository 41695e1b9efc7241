//go:build !linux

package durable

import "os"

// Sync makes files and directory entries under dir reach the disk.
func Sync(dir string, files, dirs []string) error {
	return fsyncAll(files, dirs)
}

// StartWriteback does nothing here; the fsync at commit does it all.
func StartWriteback(f *os.File, off, n int64) {}
