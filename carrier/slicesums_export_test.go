package carrier

import "path/filepath"

// SliceSumsPath is where b keeps the slice digests of the content hashed
// sum (slicesums.go).
func SliceSumsPath(b *Buffer, sum string) string { return filepath.Join(b.Dir(), slicesDir, sum) }
