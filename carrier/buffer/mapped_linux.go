//go:build linux

package buffer

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// dropMapped gives back the pages of the index's memory map the process
// has touched: they stay in the page cache, and a later read of them maps
// them again from there, so only the resident set changes. Called within
// tx, which holds off bbolt's remapping of the file meanwhile. Without it a
// scan of the index keeps all of it resident (TestEntriesDropsMappedPages).
func dropMapped(tx *bolt.Tx) {
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, tx.DB().Info().Data, uintptr(tx.Size()), syscall.MADV_DONTNEED)
}
