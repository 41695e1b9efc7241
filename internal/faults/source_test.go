package faults

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

// TestSourceChangesWhileRead modifies (in place, and by appending) a file
// while a slow link is reading it: the torn copy is never committed, the
// file is not removed, and the next visit carries the new version.
func TestSourceChangesWhileRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(6))
	ctx := context.Background()
	c := e.carrier(1<<30, carrier.Options{})
	p := e.proxy("alpha")
	for i, change := range []string{"rewrite", "append"} {
		name := fmt.Sprintf("chg/%s.bin", change)
		orig := randBytes(r, 3<<20)
		e.send("alpha", "beta", map[string][]byte{name: orig})
		src := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), filepath.FromSlash(name))
		p.SetRate(2 << 20)
		start := p.BytesDown()
		done := make(chan []*carrier.HostReport, 1)
		go func() { done <- c.Pickup(ctx, e.Resolve("alpha")) }()
		for p.BytesDown()-start < 1<<20 {
			time.Sleep(5 * time.Millisecond)
		}
		var now []byte
		switch change {
		case "rewrite": // same size, new bytes in the part already read
			now = append([]byte(nil), orig...)
			copy(now[:4096], randBytes(r, 4096))
			f, err := os.OpenFile(src, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(now[:4096], 0)
			f.Close()
		case "append":
			now = append(append([]byte(nil), orig...), randBytes(r, 1000)...)
			f, err := os.OpenFile(src, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(now[len(orig):])
			f.Close()
		}
		e.world.Put("alpha", "beta", map[string][]byte{name: now})
		var rs []*carrier.HostReport
		bounded(t, 60*time.Second, "pickup", func() { rs = <-done })
		p.SetRate(0)
		t.Logf("%s while read: %s", change, rs[0].Summary())
		if rs[0].Files != 0 {
			t.Fatalf("%s: the file was taken although it changed while read", change)
		}
		got, err := os.ReadFile(src)
		if err != nil || sha256.Sum256(got) != sha256.Sum256(now) {
			t.Fatalf("%s: the changed source is gone or altered: %v", change, err)
		}
		e.world.Check(t, c.Buffer()) // no torn copy in the buffer
		// Next visit, the file has settled: the new version goes.
		old := time.Now().Add(-time.Hour)
		os.Chtimes(src, old, old.Add(time.Duration(i+1)*time.Second))
		if rs := c.Pickup(ctx, e.Resolve("alpha")); reportsErr(rs) != nil || rs[0].Files != 1 {
			t.Fatalf("%s: next pickup: %v %s", change, reportsErr(rs), rs[0].Summary())
		}
		e.world.Check(t, c.Buffer())
	}
	if rs, _ := c.Dropoff(ctx, e.Resolve("beta")); reportsErr(rs) != nil {
		t.Fatal(reportsErr(rs))
	}
	e.world.CheckSettled(t, c.Buffer())
}

// TestUnremovableSource makes the outbox read-only (a read-only bind
// mount: root ignores permission bits): each file is carried once,
// reported as not removable, delivered once, and later visits neither
// carry nor deliver it again.
func TestUnremovableSource(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(7))
	files := smallTree(r, "ro", 5, 4<<10)
	e.send("alpha", "beta", files)
	for k := range e.world.Sent {
		e.world.Stuck[k] = true
	}
	dir := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")))
	requireRoot(t)
	mustRun(t, "mount", "--bind", dir, dir)
	t.Cleanup(func() { mustRun(t, "umount", "-l", dir) })
	mustRun(t, "mount", "-o", "remount,ro,bind", dir)

	ctx := context.Background()
	c := e.carrier(1<<30, carrier.Options{})
	for visit := 1; visit <= 3; visit++ {
		rs := c.Pickup(ctx, e.Resolve("alpha"))
		if rs[0].Err != nil || len(rs[0].Failed) > 0 {
			t.Fatalf("visit %d: %s", visit, rs[0].Summary())
		}
		t.Logf("visit %d: %s", visit, rs[0].Summary())
		wantFiles, wantAlready := len(files), 0
		if visit > 1 {
			wantFiles, wantAlready = 0, len(files)
		}
		if rs[0].Files != wantFiles || rs[0].Already != wantAlready || len(rs[0].Skipped) != len(files) {
			t.Errorf("visit %d: want %d carried, %d already, %d reported not removable: %s", visit, wantFiles, wantAlready, len(files), rs[0].Summary())
		}
		drs, _ := c.Dropoff(ctx, e.Resolve("beta"))
		if reportsErr(drs) != nil {
			t.Fatal(reportsErr(drs))
		}
		e.world.Check(t, c.Buffer())
	}
	e.world.CheckSettled(t, c.Buffer())
}
