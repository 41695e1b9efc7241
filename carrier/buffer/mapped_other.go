//go:build !linux

package buffer

import bolt "go.etcd.io/bbolt"

// dropMapped is a no-op where the index's touched pages are not given back.
func dropMapped(*bolt.Tx) {}
