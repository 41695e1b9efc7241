package carrier

import (
	"io/fs"
	"sort"
	"time"
)

// candidate is one regular file found in an outbox.
type candidate struct {
	Dest  string
	Path  string // relative to outbox/<Dest>
	Size  int64
	MTime time.Time
	Perm  fs.FileMode // the permission bits, as listed
}

// plan picks, oldest first, the candidates that fit in free bytes. A file
// too big for the space left is passed over and smaller ones still go.
func plan(cands []candidate, free int64) (take, wait []candidate) {
	sorted := append([]candidate(nil), cands...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if !a.MTime.Equal(b.MTime) {
			return a.MTime.Before(b.MTime)
		}
		if a.Dest != b.Dest {
			return a.Dest < b.Dest
		}
		return a.Path < b.Path
	})
	for _, c := range sorted {
		if c.Size <= free {
			take = append(take, c)
			free -= c.Size
		} else {
			wait = append(wait, c)
		}
	}
	return take, wait
}
