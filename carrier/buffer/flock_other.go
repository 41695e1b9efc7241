//go:build !unix

package buffer

import "os"

// lockPath cannot lock on this platform; bbolt's own lock still guards
// runs.
func lockPath(p string) (unlock func(), busy bool) { return func() {}, false }

// unlockFile has nothing to drop on this platform.
func unlockFile(f *os.File) {}
