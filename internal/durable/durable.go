// Package durable writes files so that they survive a crash: whole or not
// at all, and with the directory entries that name them synced. The
// carrier's buffer (carrier/buffer) and the carrier's own files (receipts in
// the buffer's directory, its SSH key) are written through it.
package durable

import (
	"os"
	"path/filepath"
)

// SyncDir fsyncs the directory dir, making the entries in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFile writes p whole or not at all (temp file, fsync, rename,
// fsync of the directory).
func WriteFile(p string, data []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(p))
}

// WriteNew creates p, which must not exist, with data, and does not sync
// it: the caller makes it durable (Sync) before it relies on it. A failed
// write removes p. (No temporary name: the buffer's record file torn by a
// crash describes entries that were never indexed, and is dropped at open.)
func WriteNew(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

// fsyncAll fsyncs files, then directories.
func fsyncAll(files, dirs []string) error {
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	for _, d := range dirs {
		if err := SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}
