//go:build !unix

package carrier

import "os"

// lockIndex cannot lock on this platform; bbolt's own lock still guards
// runs.
func lockIndex(dbPath string) (unlock func(), busy bool) { return func() {}, false }

// unlockFile has nothing to drop on this platform.
func unlockFile(f *os.File) {}
