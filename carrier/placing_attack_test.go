package carrier_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// moveAndAppend is what the user of beta does with a file delivered to
// its inbox: moves it out of the inbox (the same filesystem), and adds to
// it. It returns the moved file's path and what it holds.
func moveAndAppend(t *testing.T, beta, rel string, carried []byte) (string, []byte) {
	t.Helper()
	final := filepath.Join(beta, filepath.FromSlash(protocol.InboxDir("alpha")), filepath.FromSlash(rel))
	moved := filepath.Join(beta, "kept elsewhere.txt")
	if err := os.Rename(final, moved); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(moved, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	own := []byte("and the user's own words after it\n")
	if _, err := f.Write(own); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return moved, append(append([]byte{}, carried...), own...)
}

// TestPlacingNoteReaddressed: a visit to beta (no exec) is cut inside the
// host's rename of a big file's partial (linked, not unlinked); its user
// moves the file delivered out of the inbox and adds to it. The hosts file
// then names that machine beta-new, and the user readdresses what is
// carried for beta to beta-new (as `messor status` advises). The visit to
// beta-new finds the same partial (its name does not depend on the
// destination's): noted as being placed, under beta's name. It must not be
// resumed: the moved file keeps every byte its user wrote.
func TestPlacingNoteReaddressed(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	cutPlacing(t, rh, e, c, crashInRename)
	beta := e.Dirs["beta"]
	moved, edited := moveAndAppend(t, beta, rel, carried)

	addr, port := e.Hosts["beta"].Addr()
	e.Home.AddHostAddr("beta-new", addr, port)
	ents, err := c.Buffer().CarriedFor("beta", "")
	if err != nil || len(ents) != 1 {
		t.Fatalf("carried for beta: %v, %v", ents, err)
	}
	if err := c.Buffer().Readdress(ents, "beta-new"); err != nil {
		t.Fatal(err)
	}
	rs, err := c.Dropoff(context.Background(), e.Resolve("beta-new"))
	if err != nil {
		t.Fatal(err)
	}
	conformance.MustOK(t, rs)
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, edited) {
		t.Fatalf("the moved file holds %d bytes (%v), want the %d its user left: the partial was written through", len(got), err, len(edited))
	}
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: carried})
	if n := placingNotes(t, e.Buf); len(n) > 0 {
		t.Errorf("notes left after the visit: %q", n)
	}
}

// TestPlacingRefusedButLinked: a host answers the rename of a big file's
// partial with a status error although it did link the final name (a
// buggy server: its rename links, then fails, and leaves both names), and
// the visit is cut just before the carrier's removal of the partial (it
// found the file delivered). The partial is a second name of the file
// delivered, as in TestPlacingCutNoExec: its user moves that file out of
// the inbox and adds to it, and the next visit (no exec) must not resume
// the partial.
func TestPlacingRefusedButLinked(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	linked := false
	cutPlacing(t, rh, e, c, func(beta string, r sftptest.Request) bool {
		if isPlacing(r) && !linked {
			// The link the host makes before it fails the rename
			// (OpenSSH's own link then fails: the name is taken).
			if err := os.Link(filepath.Join(beta, filepath.FromSlash(r.Path)), filepath.Join(beta, filepath.FromSlash(r.Target))); err != nil {
				panic(err)
			}
			linked = true
			return false
		}
		return linked && cutBeforeRemove(beta, r)
	})
	moved, edited := moveAndAppend(t, e.Dirs["beta"], rel, carried)
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, edited) {
		t.Fatalf("the moved file holds %d bytes (%v), want the %d its user left: the partial was written through", len(got), err, len(edited))
	}
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: carried})
	if n := placingNotes(t, e.Buf); len(n) > 0 {
		t.Errorf("notes left after the visit: %q", n)
	}
}

// TestPlacingNameTakenMeanwhile: the final name of a big file is taken
// (the user writes a file there) between the carrier's look and its
// rename: the host refuses the rename, the file is placed under the next
// free name, and no note is left.
func TestPlacingNameTakenMeanwhile(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	mine := []byte("the user's own file\n")
	for _, noExec := range []bool{false, true} {
		rh := &relayedHost{}
		e := conformance.NewEnv(t, rh.start(noExec), "alpha", "beta")
		e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
		c := e.Carrier(1<<30, carrier.Options{})
		conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
		beta := e.Dirs["beta"]
		taken := false
		rh.set(func(r sftptest.Request) bool {
			if isPlacing(r) && !taken {
				taken = true
				if err := os.WriteFile(filepath.Join(beta, filepath.FromSlash(r.Target)), mine, 0o644); err != nil {
					panic(err)
				}
			}
			return false
		})
		conformance.MustOK(t, e.Dropoff(c, "beta"))
		rh.set(nil)
		if !taken {
			t.Fatal("no rename of the partial seen")
		}
		conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: mine, protocol.ConflictName(rel, 2): carried})
		if n := placingNotes(t, e.Buf); len(n) > 0 {
			t.Errorf("noexec=%v: notes left after the visit: %q", noExec, n)
		}
	}
}

// TestPlacingNoteDiskFull: the carrier's buffer disk is full when a big
// file's partial is to be noted as being placed: the delivery fails,
// saying why, the partial is not put in place (nor linked anywhere), the
// file stays carried, and once space is freed the next visit delivers it
// and leaves no note.
func TestPlacingNoteDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: root only")
	}
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha", "beta")
	if err := os.MkdirAll(e.Buf, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", e.Buf).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(e.Buf, syscall.MNT_DETACH) })
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	filler := filepath.Join(e.Buf, "filler")
	var once sync.Once
	rh.set(func(r sftptest.Request) bool {
		// Full from the first write to the partial on: what the visit
		// itself writes before that (if anything) is not at stake.
		if r.Type == sftptest.FxpOpen && strings.Contains(r.Path, protocol.PartialPrefix) {
			once.Do(func() { fill(t, filler) })
		}
		return false
	})
	rs := e.Dropoff(c, "beta")
	rh.set(nil)
	t.Logf("on a full buffer disk: %s %+v", rs[0].Summary(), rs[0].Failed)
	if len(rs[0].Failed) != 1 || !strings.Contains(rs[0].Failed[0].Reason, "no space left") {
		t.Errorf("on a full buffer disk: %+v (%v), want the file failed, saying the disk is full", rs[0].Failed, rs[0].Err)
	}
	dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "a b")
	ents, _ := os.ReadDir(dir)
	for _, de := range ents {
		if !strings.HasPrefix(de.Name(), protocol.PartialPrefix) {
			t.Errorf("on a full buffer disk, %s was put in the inbox", de.Name())
		} else if st, err := os.Stat(filepath.Join(dir, de.Name())); err == nil && st.Sys().(*syscall.Stat_t).Nlink != 1 {
			t.Errorf("the partial %s has %d names", de.Name(), st.Sys().(*syscall.Stat_t).Nlink)
		}
	}
	if n, err := c.Buffer().CarriedFor("beta", ""); err != nil || len(n) != 1 {
		t.Errorf("carried for beta after the failure: %v, %v", n, err)
	}
	os.Remove(filler)
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: carried})
	if n := placingNotes(t, e.Buf); len(n) > 0 {
		t.Errorf("notes left after the visit: %q", n)
	}
}

// fill writes p until its disk is full.
func fill(t *testing.T, p string) {
	f, err := os.Create(p)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			return
		}
	}
}

// TestPlacingNoteSurvivesRecover: a visit to a host without exec is cut
// inside the host's rename of a big file's partial; the carrier's index is
// then rebuilt (`messor recover --force`, deleting the index: a recover
// from its records). The note is still there, and the next visit, after
// the file's user moved it out of the inbox and added to it, does not
// resume the partial.
func TestPlacingNoteSurvivesRecover(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	cutPlacing(t, rh, e, c, crashInRename)
	c.Buffer().Close()
	if err := os.Remove(filepath.Join(e.Buf, "index.db")); err != nil {
		t.Fatal(err)
	}
	rep, err := carrier.RecoverBuffer(e.Buf)
	if err != nil || rep.Restored != 1 {
		t.Fatalf("recover: %+v, %v", rep, err)
	}
	if n := placingNotes(t, e.Buf); len(n) != 1 {
		t.Errorf("after the recover, notes %q, want the one", n)
	}
	moved, edited := moveAndAppend(t, e.Dirs["beta"], rel, carried)
	c = e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, edited) {
		t.Fatalf("the moved file holds %d bytes (%v), want the %d its user left: the partial was written through", len(got), err, len(edited))
	}
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: carried})
	if n := placingNotes(t, e.Buf); len(n) > 0 {
		t.Errorf("notes left after the visit: %q", n)
	}
}

// TestPlacingTwoVersions: two versions of each of four big files (picked
// up on two visits) delivered in one visit, by parallel workers and
// lanes, on a host without exec and on one offering hardlink@openssh.com:
// both versions arrive, one under each name, and no note is left.
func TestPlacingTwoVersions(t *testing.T) {
	for _, k := range []struct {
		name  string
		start func(*relayedHost) conformance.StartFunc
	}{
		{"sshd-internal-sftp", func(rh *relayedHost) conformance.StartFunc { return rh.start(true) }},
		{"hardlink", func(rh *relayedHost) conformance.StartFunc { return rh.startGoSFTP }},
	} {
		t.Run(k.name, func(t *testing.T) {
			rh := &relayedHost{}
			e := conformance.NewEnv(t, rh.start(true), "alpha")
			e.Start = k.start(rh)
			e.AddHost("beta", true)
			c := e.Carrier(1<<30, carrier.Options{})
			r := rand.New(rand.NewSource(7))
			versions := map[string][2][]byte{}
			for i := range 4 {
				name := fmt.Sprintf("d/report%d.bin", i)
				var v [2][]byte
				for j := range v {
					v[j] = make([]byte, 300<<10+j)
					r.Read(v[j])
					e.Outbox("alpha", "beta", map[string][]byte{name: v[j]})
					conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
				}
				versions[name] = v
			}
			conformance.MustOK(t, e.Dropoff(c, "beta"))
			conformance.MustOK(t, e.Dropoff(c, "beta")) // a host that cannot sync: released now
			got := e.Inbox("beta", "alpha")
			for name, v := range versions {
				a, b := got[name], got[protocol.ConflictName(name, 2)]
				if !(bytes.Equal(a, v[0]) && bytes.Equal(b, v[1])) && !(bytes.Equal(a, v[1]) && bytes.Equal(b, v[0])) {
					t.Errorf("%s: the two versions did not both arrive (%d and %d bytes)", name, len(a), len(b))
				}
			}
			if len(got) != 8 {
				t.Errorf("inbox holds %d files, want 8", len(got))
			}
			if n, _ := c.Buffer().Entries(); len(n) != 0 {
				t.Errorf("buffer still holds %d entries", len(n))
			}
			if n := placingNotes(t, e.Buf); len(n) > 0 {
				t.Errorf("notes left: %q", n)
			}
		})
	}
}

// TestPlacingNotedLstatFails: the first look for a big file's partial left
// by a visit cut inside the host's rename (no exec) fails with an error
// other than "no such file" (here: too many levels of symbolic links, the
// directory swapped for a moment), and the next look finds it. It is still
// under the note: never resumed, whatever the first look said.
func TestPlacingNotedLstatFails(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	cutPlacing(t, rh, e, c, crashInRename)
	beta := e.Dirs["beta"]
	moved, edited := moveAndAppend(t, beta, rel, carried)
	dir := filepath.Join(beta, filepath.FromSlash(protocol.InboxDir("alpha")), "a b")
	var mu sync.Mutex
	swapped, done := false, false
	rh.set(func(r sftptest.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !swapped && !done && r.Type == sftptest.FxpLstat && strings.HasPrefix(path.Base(r.Path), protocol.PartialPrefix):
			if err := os.Rename(dir, dir+".away"); err != nil {
				panic(err)
			}
			if err := os.Symlink(filepath.Base(dir), dir); err != nil { // itself: ELOOP
				panic(err)
			}
			swapped = true
		case swapped:
			time.Sleep(100 * time.Millisecond) // the host answered the look meanwhile
			os.Remove(dir)
			if err := os.Rename(dir+".away", dir); err != nil {
				panic(err)
			}
			swapped, done = false, true
		}
		return false
	})
	rs := e.Dropoff(c, "beta")
	rh.set(nil)
	if !done {
		t.Fatalf("the look for the partial was not seen: %s", rs[0].Summary())
	}
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, edited) {
		t.Fatalf("the moved file holds %d bytes (%v), want the %d its user left: the partial was written through", len(got), err, len(edited))
	}
	conformance.MustOK(t, rs)
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: carried})
}

// TestPlacingNoteOtherHostResumes: alpha sends the same big file to beta
// and to gamma (two machines: the partials have one name on both). A visit
// to beta is cut inside the host's rename, leaving a note for beta; a
// visit to gamma is cut while it uploads. The next visit to gamma resumes
// its partial: beta's note says nothing of gamma's.
func TestPlacingNoteOtherHostResumes(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := make([]byte, 4<<20)
	rand.New(rand.NewSource(9)).Read(carried)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha", "beta", "gamma")
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	e.Outbox("alpha", "gamma", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	cutPlacing(t, rh, e, c, crashInRename)
	var mu sync.Mutex
	writes := 0
	rh.set(func(r sftptest.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if r.Type == sftptest.FxpWrite {
			writes++
		}
		return writes == 16
	})
	rs, err := c.Dropoff(context.Background(), e.Resolve("gamma"))
	rh.set(nil)
	if err != nil || len(rs) != 1 || !rs[0].Failure() {
		t.Fatalf("the visit to gamma was not cut (%d writes): %s, %v", writes, rs[0].Summary(), err)
	}
	rs, err = c.Dropoff(context.Background(), e.Resolve("gamma"))
	if err != nil {
		t.Fatal(err)
	}
	conformance.MustOK(t, rs)
	if rs[0].Resumed == 0 {
		t.Errorf("gamma's partial was sent again from the start: %s", rs[0].Summary())
	}
	conformance.SameTree(t, "inbox", e.Inbox("gamma", "alpha"), map[string][]byte{rel: carried})
}
