//go:build linux

package buffer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// indexResident is how many bytes of dir's index.db the process has
// resident (its mappings' Rss in /proc/self/smaps).
func indexResident(t *testing.T, dir string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "index.db")
	var in bool
	var kib int64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && f[5] == want
			continue
		}
		if in && len(f) >= 2 && f[0] == "Rss:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			kib += v
		}
	}
	return kib << 10
}

// A scan of the index (Entries, which every dropoff starts with) and the
// releases of a dropoff do not leave the index's pages resident: at
// 100,000 files they were most of a dropoff's peak RSS.
func TestEntriesDropsMappedPages(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 5000
	datas := map[string][]byte{}
	for i := range n {
		datas[fmt.Sprintf("src/d%02d/f%06d.dat", i%100, i)] = []byte(strconv.Itoa(i))
	}
	ents := commitBatch(t, b, datas)
	fi, err := os.Stat(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Entries()
	if err != nil || len(got) != n {
		t.Fatalf("Entries: %d entries, %v; want %d", len(got), err, n)
	}
	bound := fi.Size() / 8
	if r := indexResident(t, dir); r > bound {
		t.Errorf("after Entries, %d bytes of the %d-byte index resident, want <= %d", r, fi.Size(), bound)
	}
	for _, e := range ents {
		b.Release(e)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	b.DropIndexPages()
	if r := indexResident(t, dir); r > bound {
		t.Errorf("after releases and DropIndexPages, %d bytes of the %d-byte index resident, want <= %d", r, fi.Size(), bound)
	}
}
