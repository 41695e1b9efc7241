package faults

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"

	"github.com/messor-sync/messor/carrier"
)

// memOutbox is an SFTP server holding outbox/beta/ in memory, and beside it
// with badDirs destination directories that cannot be listed: "escape-dest"
// (listed by the server as "../escape-dest", which a client reads as
// "escape-dest", and not there) and "denied" (permission denied); with
// endless "huge", a directory that lists long names without end.
type memOutbox struct {
	badDirs, endless bool
	readOnly         bool // nothing can be renamed or removed
	// growing: each listing of outbox/beta (up to the 500th) adds this
	// many new files, as a writer busy during the visit; same: all with
	// the same content.
	growing int
	same    bool

	mu     sync.Mutex
	files  map[string][]byte // name in outbox/beta/ -> content
	lists  int               // listings of outbox/beta
	served int               // entries of outbox/beta served by the last listing
}

const memDir = "/messor/outbox/beta/"

func (m *memOutbox) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p := r.Filepath
	if r.Method == "List" {
		switch p {
		case "/messor/outbox":
			l := listed{info{"beta", 0, fs.ModeDir | 0o755}}
			if m.badDirs {
				l = append(l, info{"../escape-dest", 0, fs.ModeDir | 0o755}, info{"denied", 0, fs.ModeDir | 0o755})
			}
			if m.endless {
				l = append(l, info{"huge", 0, fs.ModeDir | 0o755})
			}
			return l, nil
		case "/messor/outbox/beta":
			m.mu.Lock()
			defer m.mu.Unlock()
			var l listed
			for n, b := range m.files {
				l = append(l, info{n, int64(len(b)), 0o644})
			}
			slices.SortFunc(l, func(a, b os.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
			m.lists++
			m.served = len(l)
			for i := 0; i < m.growing && m.lists <= 500; i++ {
				data := fmt.Sprintf("new %d %d\n", m.lists, i)
				if m.same {
					data = "same\n"
				}
				m.files[fmt.Sprintf("new%04d-%d", m.lists, i)] = []byte(data)
			}
			return l, nil
		case "/messor/outbox/denied":
			return nil, os.ErrPermission
		case "/messor/outbox/huge":
			return longNames{}, nil
		}
		return nil, os.ErrNotExist
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.files[strings.TrimPrefix(p, memDir)]; ok && strings.HasPrefix(p, memDir) {
		return listed{info{path.Base(p), int64(len(b)), 0o644}}, nil
	}
	if p == "/" || p == "/messor" || p == "/messor/outbox" || p == "/messor/outbox/beta" {
		return listed{info{path.Base(p), 0, fs.ModeDir | 0o755}}, nil
	}
	return nil, os.ErrNotExist
}

// longNames lists symbolic links with names of 240 bytes, without end.
type longNames struct{}

func (longNames) ListAt(out []os.FileInfo, off int64) (int, error) {
	for i := range out {
		out[i] = info{fmt.Sprintf("%012d-%s", off+int64(i), strings.Repeat("n", 227)), 1, fs.ModeSymlink | 0o777}
	}
	return len(out), nil
}

func (m *memOutbox) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	m.mu.Lock()
	b, ok := m.files[strings.TrimPrefix(r.Filepath, memDir)]
	m.mu.Unlock()
	if !ok || !strings.HasPrefix(r.Filepath, memDir) {
		return nil, os.ErrNotExist
	}
	return bytesAt(b), nil
}

func (m *memOutbox) Filewrite(*sftp.Request) (io.WriterAt, error) { return nil, os.ErrPermission }

func (m *memOutbox) Filecmd(r *sftp.Request) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return os.ErrPermission
	}
	from, to := strings.TrimPrefix(r.Filepath, memDir), strings.TrimPrefix(r.Target, memDir)
	b, ok := m.files[from]
	if !ok || !strings.HasPrefix(r.Filepath, memDir) {
		return os.ErrNotExist
	}
	switch r.Method {
	case "Rename":
		if _, taken := m.files[to]; taken || !strings.HasPrefix(r.Target, memDir) {
			return os.ErrExist
		}
		m.files[to] = b
		delete(m.files, from)
	case "Remove":
		delete(m.files, from)
	default:
		return os.ErrPermission
	}
	return nil
}

// TestBadDirectoriesPassedOver: a destination directory that cannot be
// listed (not there, or refused) is reported and passed over; the rest of
// the outbox is carried. A refusal is a failure (the exit status says so).
func TestBadDirectoriesPassedOver(t *testing.T) {
	t.Parallel()
	m := &memOutbox{badDirs: true, files: map[string][]byte{"a.txt": []byte("a\n"), "b.txt": []byte("b\n")}}
	e := newEnv(t)
	e.Start = startHandlers(m)
	e.AddHost("mem", true)
	c := e.carrier(1<<30, carrier.Options{Settle: -1})
	r := c.Pickup(context.Background(), e.Resolve("mem"))[0]
	t.Logf("%s; err %v; skipped %v; failed %v", r.Summary(), r.Err, r.Skipped, r.Failed)
	if r.Err != nil || r.Files != 2 || len(m.files) != 0 {
		t.Errorf("carried %d files (err %v), %d left in the outbox; want both carried", r.Files, r.Err, len(m.files))
	}
	if !slices.Contains(r.Skipped, carrier.FileNote{Path: "escape-dest/", Reason: "directory gone while listed"}) {
		t.Errorf("skipped %v: escape-dest/ not reported", r.Skipped)
	}
	if len(r.Failed) != 1 || r.Failed[0].Path != "denied/" || !r.Failure() {
		t.Errorf("failed %v (failure %v): want denied/ alone, and a failure", r.Failed, r.Failure())
	}
}

// manyFiles puts n small files into m's outbox/beta and makes a carrier
// that lists at most maxListing entries at a time.
func manyFiles(t *testing.T, m *memOutbox, n, maxListing int) (*env, *carrier.Carrier) {
	for i := range n {
		m.files[fmt.Sprintf("f%05d", i)] = []byte(fmt.Sprintf("file %d\n", i))
	}
	e := newEnv(t)
	e.Start = startHandlers(m)
	e.AddHost("mem", true)
	return e, e.carrier(1<<30, carrier.Options{Settle: -1, MaxListing: maxListing})
}

// TestListingInRounds: an outbox bigger than one listing round (MaxListing
// entries) is carried in rounds within one visit.
func TestListingInRounds(t *testing.T) {
	t.Parallel()
	m := &memOutbox{files: map[string][]byte{}}
	e, c := manyFiles(t, m, 2500, 1000)
	r := c.Pickup(context.Background(), e.Resolve("mem"))[0]
	t.Logf("%s; err %v; failed %d; outbox/beta listed %d times", r.Summary(), r.Err, len(r.Failed), m.lists)
	if r.Files != 2500 || len(m.files) != 0 {
		t.Errorf("carried %d of 2500 files, %d left", r.Files, len(m.files))
	}
	if m.lists < 3 {
		t.Errorf("outbox/beta listed %d times: not in rounds", m.lists)
	}
}

// TestListingInRoundsUnremovable: files that are carried but cannot be
// removed fill every listing round alike; the visit ends (reporting them)
// instead of listing them again and again.
func TestListingInRoundsUnremovable(t *testing.T) {
	t.Parallel()
	m := &memOutbox{readOnly: true, files: map[string][]byte{}}
	e, c := manyFiles(t, m, 25, 10)
	var r *carrier.HostReport
	bounded(t, 60*time.Second, "pickup of unremovable files in rounds", func() { r = c.Pickup(context.Background(), e.Resolve("mem"))[0] })
	t.Logf("%s; outbox/beta listed %d times", r.Summary(), m.lists)
	if r.Files != 10 || r.Already != 0 || len(r.Skipped) != 10 || m.lists != 2 || r.Err == nil {
		t.Errorf("carried %d, already %d, %d reported not removable, listed %d times, err %v; want 10, 0, 10, twice and an error (the rest cannot be reached)",
			r.Files, r.Already, len(r.Skipped), m.lists, r.Err)
	}
}

// listingHeapBound is what a listing may add to the heap: a round takes in
// at most 16 MiB of replies, a few times that in memory.
const listingHeapBound = 96 << 20

// TestListingMemory: a directory that lists long names without end takes a
// bounded amount of memory (measured as the heap's peak over the pickup),
// ends the visit with an error, and the honest files beside it are carried.
func TestListingMemory(t *testing.T) {
	m := &memOutbox{endless: true, files: map[string][]byte{"a.txt": []byte("a\n")}}
	e := newEnv(t)
	e.Start = startHandlers(m)
	e.AddHost("mem", true)
	c := e.carrier(1<<30, carrier.Options{Settle: -1})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan *carrier.HostReport)
	go func() { done <- c.Pickup(ctx, e.Resolve("mem"))[0] }()
	var peak uint64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var r *carrier.HostReport
	for r == nil {
		select {
		case r = <-done:
		case <-tick.C:
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base {
				peak = max(peak, ms.HeapAlloc-base)
			}
			if peak > listingHeapBound {
				cancel() // over: stop it before it takes the machine
			}
		}
	}
	t.Logf("heap grew by at most %d MiB; %s; err %v; %d skipped", peak>>20, r.Summary(), r.Err, len(r.Skipped))
	if peak > listingHeapBound {
		t.Errorf("listing an endless directory took over %d MiB of heap", listingHeapBound>>20)
	}
	if r.Err == nil || !strings.Contains(r.Err.Error(), "more than one listing holds") {
		t.Errorf("an endless directory: err %v, want it reported", r.Err)
	}
	if len(r.Skipped) > 10_001 {
		t.Errorf("%d notes of skipped entries: the report grows with the listing", len(r.Skipped))
	}
}

// TestListingInRoundsGrowing: a writer adding files faster than one
// listing round takes them (MaxListing 50, 60 new files a listing) does not
// keep the visit going for ever: unique files fill the buffer, files of
// content already carried stop at Options.MaxRounds listings.
func TestListingInRoundsGrowing(t *testing.T) {
	t.Parallel()
	for _, same := range []bool{false, true} {
		m := &memOutbox{files: map[string][]byte{}, growing: 60, same: same}
		for i := range 60 {
			m.files[fmt.Sprintf("f%05d", i)] = []byte(fmt.Sprintf("file %d\n", i))
		}
		e := newEnv(t)
		e.Start = startHandlers(m)
		e.AddHost("mem", true)
		c := e.carrier(4<<10, carrier.Options{Settle: -1, MaxListing: 50, MaxRounds: 20})
		var r *carrier.HostReport
		// A hang guard only: 1,000 files through the in-process server
		// under -race took over a minute at load 40.
		bounded(t, 5*time.Minute, "pickup of a growing outbox", func() { r = c.Pickup(context.Background(), e.Resolve("mem"))[0] })
		t.Logf("same content %v: %s; err %v; outbox/beta listed %d times; %d files carried, %d waiting", same, r.Summary(), r.Err, m.lists, r.Files, len(r.Waiting))
		if m.lists > 20 {
			t.Errorf("same content %v: outbox/beta listed %d times in one visit", same, m.lists)
		}
	}
}
