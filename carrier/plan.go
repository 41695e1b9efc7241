package carrier

import (
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/messor-sync/messor/carrier/buffer"
)

// candidate is one regular file found in an outbox.
type candidate struct {
	Dest  string
	Path  string // relative to outbox/<Dest>
	Size  int64
	MTime time.Time
	Perm  fs.FileMode // the permission bits, as listed
	Keep  bool        // its outbox is in keep mode (lease.go)
	// Leased: a lease stands beside it (left from keep mode, when Keep
	// is not set: it goes with the file).
	Leased bool
}

// plan picks, oldest first, the candidates that fit in free bytes. A file
// too big for the space left is passed over and smaller ones still go.
// have tells the bytes a candidate's partial download holds: they are
// counted as used already, and count toward their own file (reserve does
// the same), so a resumed download needs room for the rest only.
func plan(cands []candidate, free int64, have func(candidate) int64) (take, wait []candidate) {
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
		if need := c.Size - have(c); need <= free {
			take = append(take, c)
			free -= need
		} else {
			wait = append(wait, c)
		}
	}
	return take, wait
}

// partialsOf returns, for plan, the bytes held by the partial download of
// a candidate from source.
func (b *Buffer) partialsOf(source string) func(candidate) int64 {
	return func(c candidate) int64 {
		st, err := os.Stat(b.PartialPath(c.origin(source)))
		if err != nil || !st.Mode().IsRegular() {
			return 0
		}
		return st.Size()
	}
}

// origin is where cd, listed on host, comes from.
func (cd candidate) origin(host string) buffer.Origin {
	return buffer.Origin{Source: host, Dest: cd.Dest, Path: cd.Path, Size: cd.Size, MTime: cd.MTime.Unix()}
}
