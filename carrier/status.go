package carrier

import (
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/messor-sync/messor/carrier/buffer"
)

// Status is what a buffer carries, for `messor status`.
type Status struct {
	Buffer string       `json:"buffer"`
	Limit  int64        `json:"limit"`
	Stored int64        `json:"stored"` // bytes on disk for committed objects (deduplicated)
	Files  int          `json:"files"`
	Bytes  int64        `json:"bytes"` // sum of file sizes (before dedup)
	Routes []RouteTotal `json:"routes"`
	Items  []Entry      `json:"files_carried"`
	// Quarantine is what the buffer keeps in quarantine/: content and
	// records it found but could not place (see OpenBuffer). messor never
	// deletes them; they do not count against the limit.
	Quarantine Quarantine `json:"quarantine"`
	// NeverSeen: destinations carried for that no configuration names and
	// no run visited (FlagNeverSeen); absent when not checked.
	NeverSeen []string `json:"never_seen,omitempty"`
	// Hosts: per host, the delivered files whose receipts wait to go home
	// to it, and the live leases this carrier holds on it.
	Hosts []HostReceipts `json:"hosts"`
}

// Quarantine sums the files in a buffer's quarantine/.
type Quarantine struct {
	Dir   string `json:"dir"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
}

// RouteTotal sums the files carried from one source to one destination.
type RouteTotal struct {
	Source string `json:"source"`
	Dest   string `json:"dest"`
	Files  int    `json:"files"`
	Bytes  int64  `json:"bytes"`
}

// ReadStatus summarises the buffer.
func ReadStatus(b *Buffer) (*Status, error) {
	ents, err := b.Entries()
	if err != nil {
		return nil, err
	}
	st := &Status{Buffer: b.Dir(), Limit: b.Limit(), Stored: b.Stored(), Items: ents,
		Quarantine: Quarantine{Dir: filepath.Join(b.Dir(), buffer.QuarantineDir)}}
	qs, _ := os.ReadDir(st.Quarantine.Dir)
	for _, q := range qs {
		if info, err := q.Info(); err == nil && info.Mode().IsRegular() {
			st.Quarantine.Files++
			st.Quarantine.Bytes += info.Size()
		}
	}
	if st.Items == nil {
		st.Items = []Entry{}
	}
	st.Hosts = b.receiptStatus(time.Now())
	routes := map[[2]string]*RouteTotal{}
	for _, e := range ents {
		st.Files++
		st.Bytes += e.Size
		k := [2]string{e.Source, e.Dest}
		rt := routes[k]
		if rt == nil {
			rt = &RouteTotal{Source: e.Source, Dest: e.Dest}
			routes[k] = rt
		}
		rt.Files++
		rt.Bytes += e.Size
	}
	st.Routes = []RouteTotal{}
	for _, rt := range routes {
		st.Routes = append(st.Routes, *rt)
	}
	sort.Slice(st.Routes, func(i, j int) bool {
		a, b := st.Routes[i], st.Routes[j]
		if a.Dest != b.Dest {
			return a.Dest < b.Dest
		}
		return a.Source < b.Source
	})
	return st, nil
}
