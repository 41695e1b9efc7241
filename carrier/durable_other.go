//go:build !linux

package carrier

import "os"

// durable makes files and directory entries under dir reach the disk.
func durable(dir string, files, dirs []string) error {
	return fsyncAll(files, dirs)
}

// startWriteback does nothing here; the fsync at commit does it all.
func startWriteback(f *os.File, off, n int64) {}
