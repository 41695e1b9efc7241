//go:build unix

package carrier

import (
	"errors"
	"os"
	"syscall"
)

// inUse reports whether another process holds the index lock (bbolt takes
// an flock on index.db while a buffer is open).
func inUse(dbPath string) bool {
	f, err := os.Open(dbPath)
	if err != nil {
		return false
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true
	}
	if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}
	return false
}
