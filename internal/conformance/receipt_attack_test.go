package conformance

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// TestReceiptAttacks runs attacks on keep mode's removals against sshd
// with exec, sshd without exec and the agent: a receipt removes only the
// exact content it names, and only inside the outbox.
func TestReceiptAttacks(t *testing.T) {
	t.Parallel()
	runOnHostKinds(t, []hostCase{
		{"SameSizeAndMTime", testKeepSameSizeMTime},
		{"SwapAtTheClaim", testKeepSwapAtClaim},
		{"SwapAtTheClaimThenCut", testKeepSwapClaimCut},
		{"DirectoryMovedOut", testKeepDirMovedOut},
		{"LeaseIsASymlink", testLeaseSymlink},
		{"KeepMarkerRemoved", testKeepMarkerRemoved},
		{"TwoCarriersLeaseAtOnce", testLeaseRace},
	})
}

// rewriteKeepTime writes data over p (of the same length as what it
// holds) and gives it back its mtime: another version that a size and an
// mtime cannot tell from the one carried.
func rewriteKeepTime(t *testing.T, p string, data []byte) {
	st, err := os.Stat(p)
	if err != nil {
		t.Error(err)
		return
	}
	if st.Size() != int64(len(data)) {
		t.Errorf("%s: %d bytes, the new version %d", p, st.Size(), len(data))
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Error(err)
	}
	if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
		t.Error(err)
	}
}

// keptOnce carries f from alpha's keep-mode outbox for beta and delivers
// it to beta with c: its receipt is in c's buffer.
func keptOnce(t *testing.T, e *Env, files map[string][]byte) *carrier.Carrier {
	e.keep("alpha", "beta")
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{})
	if r := e.pickup(c, "alpha"); r.Kept != len(files) {
		t.Fatalf("pickup: %s, kept %d", r.Summary(), r.Kept)
	}
	MustOK(t, e.Dropoff(c, "beta"))
	return c
}

// A version saved while leased, of the same size and with the same mtime
// (a tool that keeps mtimes): the old receipt does not remove it.
func testKeepSameSizeMTime(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	c := keptOnce(t, e, map[string][]byte{"f": []byte("version 1")})
	rewriteKeepTime(t, filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "f"), []byte("version 2"))
	r := e.pickup(c, "alpha")
	if r.Released != 0 {
		t.Errorf("the receipt of version 1 released %d files", r.Released)
	}
	if got := e.OutboxFiles("alpha")["beta/f"]; string(got) != "version 2" {
		t.Fatalf("version 2, saved while leased, is gone from the outbox: %q", got)
	}
	// The lease named version 1: version 2 is carried by this very
	// visit, not once the lease ends.
	if r.Files != 1 {
		t.Fatalf("pickup: %s; want version 2 carried", r.Summary())
	}
}

// relayedAlpha is an Env whose host alpha is behind a relay that shows h's
// hook every SFTP request; beta is not.
func relayedAlpha(t *testing.T, start StartFunc) (*Env, *relayHost) {
	h := &relayHost{}
	e := NewEnv(t, relayed(start, h), "alpha")
	e.Start = start
	e.AddHost("beta", true)
	return e, h
}

// The same, saved at the moment the hand-over claims the file (after any
// look at it before the claim).
func testKeepSwapAtClaim(t *testing.T, start StartFunc) {
	e, h := relayedAlpha(t, start)
	c := keptOnce(t, e, map[string][]byte{"f": []byte("version 1")})
	f := protocol.OutboxDir("beta") + "/f"
	h.set(func(r sftptest.Request) bool {
		if r.Type == sftptest.FxpRename && isClaimOf(r, f) {
			rewriteKeepTime(t, h.local(f), []byte("version 2"))
		}
		return false
	})
	r := e.pickup(c, "alpha")
	h.set(nil)
	if r.Released != 0 {
		t.Errorf("the receipt of version 1 released %d files", r.Released)
	}
	if got := e.OutboxFiles("alpha")["beta/f"]; string(got) != "version 2" {
		t.Fatalf("version 2, saved at the claim, is gone from the outbox: %q", got)
	}
}

// A kept directory moved out of the outbox, a symlink left in its place:
// the receipt removes nothing through it.
func testKeepDirMovedOut(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	c := keptOnce(t, e, map[string][]byte{"sub/f": []byte("kept")})
	sub := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "sub")
	moved := filepath.Join(e.Dirs["alpha"], "photos")
	if err := os.Rename(sub, moved); err != nil {
		t.Fatal(err)
	}
	// Relative, so that it stays inside the agent's root.
	if err := os.Symlink("../../../photos", sub); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sub, "f")); err != nil {
		t.Fatalf("the symlink does not lead to the moved file: %v", err)
	}
	r := e.pickup(c, "alpha")
	if got, err := os.ReadFile(filepath.Join(moved, "f")); err != nil || string(got) != "kept" {
		t.Fatalf("the receipt removed %s, outside the outbox (released %d): %v", path.Join("photos", "f"), r.Released, err)
	}
}

// receiptsHeldBound is what a carrier keeps at most of the receipts it
// takes from one destination (carrier's maxCollected), each file counted
// as at least one 4 KiB block.
const receiptsHeldBound = 16 << 20

// A destination that plants receipts without end, big ones and many small
// ones: the carrier takes along a bounded amount.
func TestReceiptFlood(t *testing.T) {
	t.Parallel()
	e := NewEnv(t, SSHD(false), "alpha", "beta")
	at := time.Now()
	plant := func(i, lines int) {
		r := protocol.Receipt{Source: "alpha", Dest: "beta"}
		for j := range lines {
			r.Files = append(r.Files, protocol.Delivery{Path: fmt.Sprintf("p%d-%d with a name long enough to fill a receipt quickly", i, j),
				Size: 1, MTime: at, Hash: strings.Repeat("ab", 32), At: at, Carrier: "evil"})
		}
		b := protocol.FormatReceipt(r)
		name, err := protocol.ReceiptName(at.Add(time.Duration(i)*time.Second), "evil", b)
		if err != nil {
			t.Fatal(err)
		}
		writeAt(t, filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.ReceiptDir("alpha")), name), b)
	}
	for i := range 4 {
		plant(i, 7<<20/190) // about 7 MiB each
	}
	for i := 4; i < 1004; i++ {
		plant(i, 1)
	}
	c := e.Carrier(1<<30, carrier.Options{})
	r := e.pickup(c, "beta")
	var held int64
	filepath.WalkDir(filepath.Join(e.Buf, "receipts"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if st, err := d.Info(); err == nil {
				held += max(st.Size(), 4<<10)
			}
		}
		return nil
	})
	if held > receiptsHeldBound {
		t.Fatalf("took along %d receipts, %d bytes (by 4 KiB blocks) from one destination; want at most %d", r.Collected, held, receiptsHeldBound)
	}
	if r.Collected == 0 {
		t.Fatal("took along no receipt at all")
	}
}

// A lease name that is a symlink to a file elsewhere (on the source, as
// anything in its outbox may be): the lease written at the pickup
// replaces the symlink, never the file it leads to.
func testLeaseSymlink(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{"f": []byte("kept")})
	precious := filepath.Join(e.Dirs["alpha"], "precious")
	writeAt(t, precious, []byte("not a lease"))
	lease := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), protocol.LeasePrefix+".f")
	if err := os.Symlink("../../../precious", lease); err != nil {
		t.Fatal(err)
	}
	c := e.Carrier(1<<30, carrier.Options{})
	if r := e.pickup(c, "alpha"); r.Kept != 1 {
		t.Fatalf("pickup: %s, kept %d; want f kept", r.Summary(), r.Kept)
	}
	if got, _ := os.ReadFile(precious); string(got) != "not a lease" {
		t.Fatalf("the lease was written through a symlink into a file outside the outbox: %q", got)
	}
	c2 := e.carrierAt("two", carrier.Options{})
	if r := e.pickup(c2, "alpha"); r.Files != 0 {
		t.Fatalf("a second carrier carried f again: %s (no lease in place of the symlink)", r.Summary())
	}
}

// The keep marker removed after a keep-mode pickup: the outbox is a
// blackhole again; the file, delivered, leaves it with its lease, and is
// delivered once, with one ledger line.
func testKeepMarkerRemoved(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	c := keptOnce(t, e, map[string][]byte{"f": []byte("kept")})
	if err := os.Remove(filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), protocol.KeepMarker)); err != nil {
		t.Fatal(err)
	}
	c2 := e.carrierAt("two", carrier.Options{})
	for _, c := range []*carrier.Carrier{c, c2} {
		e.pickup(c, "alpha")
		MustOK(t, e.Dropoff(c, "beta"))
		e.pickup(c, "beta")
		e.pickup(c, "alpha")
	}
	if out := e.OutboxFiles("alpha"); len(out) != 0 {
		t.Errorf("alpha's outbox still holds %v", keys(out))
	}
	SameTree(t, "beta's inbox", e.Inbox("beta", "alpha"), map[string][]byte{"f": []byte("kept")})
	if l := e.ledger("alpha", "beta"); len(l) != 1 {
		t.Errorf("ledger %q, want one line", l)
	}
	if st, _ := carrier.ReadStatus(c.Buffer()); len(st.Hosts) != 0 {
		t.Errorf("the first carrier still counts receipts or leases: %+v", st.Hosts)
	}
}

// TestReceiptClockAhead: a carrier whose clock is far ahead takes every
// receipt on a destination for older than the maximum age; receipts are
// aged by the destination's clock, so it removes none that another
// carrier would still take home.
func TestReceiptClockAhead(t *testing.T) {
	t.Parallel()
	for _, k := range hostKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := NewEnv(t, k.start, "alpha", "beta")
			e.Outbox("alpha", "beta", map[string][]byte{"f": []byte("to beta")})
			a := e.Carrier(1<<30, carrier.Options{}) // delivers, never goes back to alpha
			e.pickup(a, "alpha")
			MustOK(t, e.Dropoff(a, "beta"))
			ahead := e.carrierAt("ahead", carrier.Options{Now: func() time.Time { return time.Now().Add(40 * 24 * time.Hour) }})
			e.pickup(ahead, "beta")
			if got := e.receipts("beta", "alpha"); len(got) != 1 {
				t.Fatalf("after a carrier with its clock 40 days ahead, beta holds receipts %v, want the one written", got)
			}
			c := e.carrierAt("c", carrier.Options{})
			e.pickup(c, "beta")
			e.pickup(c, "alpha")
			if l := e.ledger("alpha", "beta"); len(l) != 1 {
				t.Fatalf("alpha's ledger %q, want the line of f", l)
			}
		})
	}
}

// TestLedgerCutLine: a ledger whose last line was cut short (the source
// crashed in a write, or its user edited it): the next line appended is a
// line of its own, not glued to the cut one.
func TestLedgerCutLine(t *testing.T) {
	t.Parallel()
	for _, k := range hostKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := NewEnv(t, k.start, "alpha", "beta")
			writeAt(t, filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.LedgerPath("beta"))), []byte("2026-12-01T00:00:00Z 3 abab"))
			e.Outbox("alpha", "beta", map[string][]byte{"f": []byte("f")})
			c := e.Carrier(1<<30, carrier.Options{})
			e.pickup(c, "alpha")
			MustOK(t, e.Dropoff(c, "beta"))
			e.pickup(c, "alpha")
			found := false
			for _, l := range e.ledger("alpha", "beta") {
				if d, err := protocol.ParseLedgerLine(l); err == nil && d.Path == "f" {
					found = true
				}
			}
			if !found {
				t.Fatalf("the ledger has no line for f: %q", e.ledger("alpha", "beta"))
			}
		})
	}
}

// Two carriers picking up one keep-mode outbox at once, their leases
// written at the same moment: every file arrives once, each leaves the
// outbox with its lease once a receipt comes back, one ledger line each.
func testLeaseRace(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "")
	files := map[string][]byte{}
	for i := range 20 {
		files[fmt.Sprintf("f%02d", i)] = []byte(fmt.Sprintf("file %d", i))
	}
	e.Outbox("alpha", "beta", files)
	cs := []*carrier.Carrier{e.Carrier(1<<30, carrier.Options{}), e.carrierAt("two", carrier.Options{})}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs := c.Pickup(context.Background(), e.Resolve("alpha"))
			if rs[0].Err != nil || len(rs[0].Failed) > 0 {
				t.Errorf("%s", rs[0].Summary())
			}
		}()
	}
	wg.Wait()
	for _, c := range cs {
		MustOK(t, e.Dropoff(c, "beta"))
	}
	for range 2 { // the second round takes home what each took from beta
		for _, c := range cs {
			e.pickup(c, "alpha")
			e.pickup(c, "beta")
		}
	}
	if got := e.receipts("beta", "alpha"); len(got) != 0 {
		t.Errorf("beta still holds receipts %v", got)
	}
	for p := range e.OutboxFiles("alpha") {
		if p != protocol.KeepMarker {
			t.Errorf("alpha's outbox still holds %s", p)
		}
	}
	SameTree(t, "beta's inbox", e.Inbox("beta", "alpha"), files)
	if l := e.ledger("alpha", "beta"); len(l) != len(files) {
		t.Errorf("ledger has %d lines, want %d", len(l), len(files))
	}
	for _, c := range cs {
		if st, _ := carrier.ReadStatus(c.Buffer()); len(st.Hosts) != 0 {
			t.Errorf("a carrier still counts receipts or leases: %+v", st.Hosts)
		}
	}
}

// The same version of the same size and mtime saved at the claim, and the
// hand-over cut just after claiming (before it could hash the claimed
// file): the next visit, finding this carrier's own claim, does not remove
// it for the version carried.
func testKeepSwapClaimCut(t *testing.T, start StartFunc) {
	e, h := relayedAlpha(t, start)
	c := keptOnce(t, e, map[string][]byte{"f": []byte("version 1")})
	f := protocol.OutboxDir("beta") + "/f"
	var claimed atomic.Bool
	h.set(func(r sftptest.Request) bool {
		if claimed.Load() {
			return true // cut at the first request after the claim
		}
		if r.Type == sftptest.FxpRename && isClaimOf(r, f) {
			rewriteKeepTime(t, h.local(f), []byte("version 2"))
			claimed.Store(true)
		}
		return false
	})
	c.Pickup(context.Background(), e.Resolve("alpha"))
	h.set(nil)
	if !claimed.Load() {
		t.Fatal("the hand-over never claimed f")
	}
	e.pickup(c, "alpha")
	if got := e.OutboxFiles("alpha")["beta/f"]; string(got) != "version 2" {
		t.Fatalf("version 2, saved at the claim, is gone from the outbox: %q (outbox %v)", got, keys(e.OutboxFiles("alpha")))
	}
}
