//go:build unix

package carrier

import (
	"errors"
	"os"
	"syscall"
)

// lockIndex takes the lock bbolt takes on index.db while a buffer is open
// (an flock), so that no run opens the buffer while RecoverBuffer works on
// it. busy reports that another process holds it; a missing index.db is
// not locked. unlock releases it.
func lockIndex(dbPath string) (unlock func(), busy bool) {
	f, err := os.Open(dbPath)
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
