package conformance

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// TestClaimSettled: claims left where a carrier stopped, or met by two
// carriers at once, are settled so that each version is delivered once
// under its own name and no claim stays for ever. Against sshd with and
// without exec, and the agent.
func TestClaimSettled(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("long name ", 22) + ".txt" // too long for a claim name
	for _, k := range hostKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			for _, name := range []string{"f.txt", long} {
				short := name[:min(len(name), 12)]
				t.Run(short+" stopped before removing", func(t *testing.T) { testStoppedDelivered(t, k.start, name, false) })
				t.Run(short+" stopped, delivered before the next visit", func(t *testing.T) { testStoppedDelivered(t, k.start, name, true) })
			}
			t.Run("put back by another carrier at once", func(t *testing.T) { testPutBackRace(t, k.start) })
			t.Run("claimed by another carrier at once", func(t *testing.T) { testClaimedByOther(t, k.start) })
			t.Run("a directory at the name put back", func(t *testing.T) { testPutBackOnto(t, k.start, false) })
			t.Run("a symlink at the name put back", func(t *testing.T) { testPutBackOnto(t, k.start, true) })
			t.Run("a claim forged under our ID", func(t *testing.T) { testForgedOwnClaim(t, k.start) })
			t.Run("a long name taken at the put-back", func(t *testing.T) { testLongPutBackTaken(t, k.start) })
			t.Run("a long name taken in the inbox", func(t *testing.T) { testLongInboxTaken(t, k.start) })
			t.Run("another carrier's claim from the future", func(t *testing.T) { testFutureClaim(t, k.start) })
		})
	}
}

// testStoppedDelivered cuts the connection at the removal of the claim of
// name (a carrier killed there), runs a dropoff before the next pickup if
// deliverFirst, then pickup and dropoff: name arrives once, under its own
// name, and the outbox is empty.
func testStoppedDelivered(t *testing.T, start StartFunc, name string, deliverFirst bool) {
	h := &relayHost{}
	e := NewEnv(t, relayed(start, h), "alpha")
	e.Start = start
	e.AddHost("beta", true)
	e.Outbox("alpha", "beta", map[string][]byte{name: claimV1})
	c := e.Carrier(1<<20, carrier.Options{})
	stopAtClaimRemoval(t, e, h, c)
	if deliverFirst {
		MustOK(t, e.Dropoff(c, "beta"))
	}
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, e.Dropoff(c, "beta"))
	SameTree(t, "outbox", e.OutboxFiles("alpha"), map[string][]byte{})
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{name: claimV1})
}

// foreignClaim writes a claim of name by carrier "0ther" made at time at.
func foreignClaim(t *testing.T, h *relayHost, name string, at time.Time, data []byte) string {
	cn, err := protocol.ClaimName(name, "0ther", at)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(h.local(protocol.OutboxDir("beta")), cn)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(p, old, old)
	return cn
}

// testPutBackRace: another carrier puts back the same lost claim just
// before this one does: not a failure, the file is back once.
func testPutBackRace(t *testing.T, start StartFunc) {
	e, h, c := newClaimEnv(t, start)
	cn := foreignClaim(t, h, "lost.txt", time.Now().Add(-2*time.Hour), []byte("lost\n"))
	h.set(func(r sftptest.Request) bool {
		if r.Type == sftptest.FxpRename && path.Base(r.Path) == cn {
			os.Rename(h.local(r.Path), h.local(r.Target)) // the other carrier, first
		}
		return false
	})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	h.set(nil)
	left := e.OutboxFiles("alpha")
	if string(left["beta/lost.txt"]) != "lost\n" || len(left) > 2 {
		t.Errorf("outbox after the visit: %v, want lost.txt back", keys(left))
	}
	carriedAll(t, e, c, claimV1, []byte("lost\n"))
}

// testFutureClaim: a claim dated hours ahead (its carrier's clock was
// wrong) is taken for lost like an old one, not left for ever.
func testFutureClaim(t *testing.T, start StartFunc) {
	e, h, c := newClaimEnv(t, start)
	foreignClaim(t, h, "ahead.txt", time.Now().Add(3*time.Hour), []byte("ahead\n"))
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	SameTree(t, "outbox after a visit", e.OutboxFiles("alpha"), map[string][]byte{"beta/ahead.txt": []byte("ahead\n")})
	carriedAll(t, e, c, claimV1, []byte("ahead\n"))
}

// testClaimedByOther: another carrier claims the file just before this one
// does: not a failure; the other carrier's claim is left alone.
func testClaimedByOther(t *testing.T, start StartFunc) {
	e, h, c := newClaimEnv(t, start)
	other, err := protocol.ClaimName("f.txt", "0ther", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.set(func(r sftptest.Request) bool {
		if r.Type == sftptest.FxpRename && isClaimOf(r, "beta/f.txt") {
			os.Rename(h.local(r.Path), filepath.Join(filepath.Dir(h.local(r.Path)), other))
		}
		return false
	})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	h.set(nil)
	SameTree(t, "outbox", e.OutboxFiles("alpha"), map[string][]byte{"beta/" + other: claimV1})
	if got := carriedContents(t, c); len(got) != 1 || got[string(claimV1)] != 1 {
		t.Errorf("carried %v, want version 1 once", got)
	}
}

// testPutBackOnto: a new version was claimed, and a directory (or a
// symlink) appears under the file's name before it is put back: it is put
// back beside it, and the directory or symlink is left as it is.
func testPutBackOnto(t *testing.T, start StartFunc, symlink bool) {
	e, h, c := newClaimEnv(t, start)
	orig := h.local("messor/outbox/beta/f.txt")
	var claimed, placed sync.Once
	h.set(func(r sftptest.Request) bool {
		switch {
		case r.Type == sftptest.FxpRename && isClaimOf(r, "beta/f.txt"):
			claimed.Do(func() { saveOver(t, h.local(r.Path), claimV2) })
		case r.Type == sftptest.FxpLstat && strings.HasPrefix(path.Base(r.Path), protocol.ClaimPrefix):
			placed.Do(func() {
				if symlink {
					os.Symlink("/etc/hostname", orig)
				} else {
					os.Mkdir(orig, 0o755)
				}
			})
		}
		return false
	})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	h.set(nil)
	fi, err := os.Lstat(orig)
	if err != nil || symlink != (fi.Mode()&os.ModeSymlink != 0) || !symlink && !fi.IsDir() {
		t.Errorf("f.txt after the put-back: %v, %v", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(filepath.Dir(orig), "f (2).txt")); string(got) != string(claimV2) {
		t.Errorf("f (2).txt: %q, %v; want version 2 put back beside", got, err)
	}
}

// testForgedOwnClaim: a claim under this carrier's ID of a file it never
// carried (forged by someone on the host) is put back, never removed.
func testForgedOwnClaim(t *testing.T, start StartFunc) {
	e, h, c := newClaimEnv(t, start)
	cn, err := protocol.ClaimName("never.txt", c.Buffer().ID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.local(protocol.OutboxDir("beta")), cn), []byte("forged\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	SameTree(t, "outbox after a visit", e.OutboxFiles("alpha"), map[string][]byte{"beta/never.txt": []byte("forged\n")})
}

// testLongPutBackTaken: a new version of a file whose name is near the
// longest allowed is claimed, and a newer one saved under the name before
// it is put back: it is put back under a conflict name cut to fit, and
// both are carried next visit.
func testLongPutBackTaken(t *testing.T, start StartFunc) {
	h := &relayHost{}
	e := NewEnv(t, relayed(start, h), "alpha")
	name := strings.Repeat("x", 250) + ".txt"
	e.Outbox("alpha", "beta", map[string][]byte{name: claimV1})
	c := e.Carrier(1<<20, carrier.Options{})
	v3 := []byte("version 3, the longest of all\n")
	var claimed, saved sync.Once
	h.set(func(r sftptest.Request) bool {
		switch {
		case r.Type == sftptest.FxpRename && isClaimOf(r, "beta/"+name):
			claimed.Do(func() { saveOverLong(t, h.local(r.Path), claimV2) })
		case r.Type == sftptest.FxpLstat && strings.HasPrefix(path.Base(r.Path), protocol.ClaimPrefix):
			saved.Do(func() { saveOverLong(t, h.local("messor/outbox/beta/"+name), v3) })
		}
		return false
	})
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	h.set(nil)
	t.Logf("%s; waiting %v; skipped %v; outbox %q", rs[0].Summary(), rs[0].Waiting, rs[0].Skipped, keys(e.OutboxFiles("alpha")))
	MustOK(t, rs)
	SameTree(t, "outbox after the first visit", e.OutboxFiles("alpha"), map[string][]byte{
		"beta/" + name: v3, "beta/" + protocol.ConflictName(name, 2): claimV2})
	carriedAll(t, e, c, claimV1, claimV2, v3)
}

// saveOverLong is saveOver for a name too long to add a suffix to: the
// temp file has a short name of its own.
func saveOverLong(t *testing.T, p string, data []byte) {
	tmp := filepath.Join(filepath.Dir(p), "tmp~")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Error(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Error(err)
	}
	old := time.Now().Add(-90 * time.Minute)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Error(err)
	}
}

// testLongInboxTaken: a file whose name is near the longest allowed, and
// taken in the inbox by other content, is delivered under a conflict name
// cut to fit.
func testLongInboxTaken(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	name := strings.Repeat("x", 250) + ".txt"
	e.Outbox("alpha", "beta", map[string][]byte{name: claimV2})
	inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
	if err := os.MkdirAll(inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inbox, name), claimV1, 0o644); err != nil {
		t.Fatal(err)
	}
	c := e.Carrier(1<<20, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, e.Dropoff(c, "beta"))
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{name: claimV1, protocol.ConflictName(name, 2): claimV2})
}

// stopAtClaimRemoval runs a visit of alpha cut at the removal of a claim
// (as a carrier killed there), which must leave the claim alone.
func stopAtClaimRemoval(t *testing.T, e *Env, h *relayHost, c *carrier.Carrier) {
	t.Helper()
	h.set(func(r sftptest.Request) bool {
		return r.Type == sftptest.FxpRemove && strings.HasPrefix(path.Base(r.Path), protocol.ClaimPrefix)
	})
	c.Pickup(context.Background(), e.Resolve("alpha"))
	h.set(nil)
	left := e.OutboxFiles("alpha")
	if len(left) != 1 || !strings.HasPrefix(path.Base(firstKey(left)), protocol.ClaimPrefix) {
		t.Fatalf("outbox after the cut: %v, want the claim alone", keys(left))
	}
}
