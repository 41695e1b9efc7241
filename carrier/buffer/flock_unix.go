//go:build unix

package buffer

import (
	"errors"
	"os"
	"syscall"
)

// lockPath takes an flock on the file or directory at p. On index.db it is
// the lock bbolt takes while a buffer is open, so that no run opens the
// buffer while Recover works on it; on the buffer's directory it
// keeps Recover and the legacy buffer move to one at a time even
// when there is no index.db to lock. busy reports that another process
// holds it; a missing p is not locked. unlock releases it.
func lockPath(p string) (unlock func(), busy bool) {
	f, err := os.Open(p)
	if err != nil {
		return func() {}, false
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return func() {}, true
	}
	return func() { f.Close() }, false // closing the file releases the lock
}

// unlockFile drops an flock held through f: closing f alone does not while
// a mapping of the file remains (bbolt's, after it panicked).
func unlockFile(f *os.File) { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
