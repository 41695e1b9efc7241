//go:build !linux

package carrier

// durable makes files and directory entries under dir reach the disk.
func durable(dir string, files, dirs []string) error {
	return fsyncAll(files, dirs)
}
