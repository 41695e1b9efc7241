package conformance

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/testenv"
	"github.com/messor-sync/messor/protocol"
)

// TestReceipts runs the receipt and keep-mode tests against sshd with exec,
// sshd without exec and the agent.
func TestReceipts(t *testing.T) {
	t.Parallel()
	runOnHostKinds(t, []hostCase{
		{"LedgerWrittenOnce", testLedgerOnce},
		{"ReceiptForContentThere", testReceiptAlreadyThere},
		{"KeepRemovesExactVersion", testKeepExactVersion},
		{"LeaseSkipsThenExpires", testLeaseExpiry},
		{"MessorNamesNeverCarried", testMessorNamesStay},
		{"HostileReceipts", testHostileReceipts},
		{"KilledBeforeForget", testKilledBeforeForget},
		{"TwoCarriersAppend", testTwoCarriersAppend},
		{"OldReceiptsExpire", testOldReceiptsExpire},
		{"AbandonedPartialsCleared", testAbandonedReceiptPartials},
		{"ClockPartialNotFollowed", testClockPartialNotFollowed},
		{"HandOverCutAtRemoval", testHandOverCutAtRemoval},
		{"KeepBiggerThanListing", testKeepBiggerThanListing},
	})
}

// carrierAt is a second carrier (its own buffer, the same HOME).
func (e *Env) carrierAt(name string, opts carrier.Options) *carrier.Carrier {
	b, err := carrier.OpenBuffer(filepath.Join(e.Home.Dir, "buffers", name), 1<<30)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { b.Close() })
	if opts.Settle == 0 {
		opts.Settle = -1
	}
	return carrier.New(b, opts)
}

func (e *Env) pickup(c *carrier.Carrier, names ...string) *carrier.HostReport {
	e.T.Helper()
	rs := c.Pickup(context.Background(), e.Resolve(names...))
	MustOK(e.T, rs)
	return rs[0]
}

// ledger reads host's ledger for dest: its lines.
func (e *Env) ledger(host, dest string) []string {
	b, err := os.ReadFile(filepath.Join(e.Dirs[host], filepath.FromSlash(protocol.LedgerPath(dest))))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (e *Env) receipts(host, source string) []string {
	ents, _ := os.ReadDir(filepath.Join(e.Dirs[host], filepath.FromSlash(protocol.ReceiptDir(source))))
	var out []string
	for _, d := range ents {
		if _, _, err := protocol.ParseReceiptName(d.Name()); err == nil {
			out = append(out, d.Name())
		}
	}
	return out
}

func (e *Env) keep(host, dest string) {
	p := filepath.Join(e.Dirs[host], filepath.FromSlash(protocol.OutboxDir(dest)), protocol.KeepMarker)
	if dest == "" {
		p = filepath.Join(e.Dirs[host], filepath.FromSlash(protocol.Outbox), protocol.KeepMarker)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		e.T.Fatal(err)
	}
}

// A delivery leaves a receipt on the destination and in the buffer; the
// next visit to the source writes one ledger line per file, and neither a
// second visit nor a second carrier bringing the same receipt adds one.
func testLedgerOnce(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	files := map[string][]byte{"a.txt": []byte("a"), "dir/b c.txt": []byte("bb"), "empty": {}}
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{})
	e.pickup(c, "alpha")
	MustOK(t, e.Dropoff(c, "beta"))
	if got := e.receipts("beta", "alpha"); len(got) != 1 {
		t.Fatalf("beta holds receipts %v, want one", got)
	}
	if st, _ := carrier.ReadStatus(c.Buffer()); len(st.Hosts) != 1 || st.Hosts[0].Host != "alpha" || st.Hosts[0].Receipts != 3 {
		t.Fatalf("status hosts = %+v, want 3 receipts for alpha", st.Hosts)
	}
	if r := e.pickup(c, "alpha"); r.Receipts != 3 {
		t.Fatalf("pickup handed over %d receipts, want 3", r.Receipts)
	}
	lines := e.ledger("alpha", "beta")
	if len(lines) != 3 {
		t.Fatalf("ledger: %q", lines)
	}
	for _, l := range lines {
		if _, err := protocol.ParseLedgerLine(l); err != nil {
			t.Fatalf("ledger line %q: %v", l, err)
		}
	}
	if st, _ := carrier.ReadStatus(c.Buffer()); len(st.Hosts) != 0 {
		t.Fatalf("receipts still held after handing over: %+v", st.Hosts)
	}
	// A second carrier takes the same receipt from beta to alpha.
	c2 := e.carrierAt("two", carrier.Options{})
	if r := e.pickup(c2, "beta"); r.Collected != 1 {
		t.Fatalf("second carrier collected %d receipts, want 1", r.Collected)
	}
	if r := e.pickup(c2, "alpha"); r.Receipts != 0 {
		t.Fatalf("second carrier appended %d lines, want 0", r.Receipts)
	}
	if got := e.ledger("alpha", "beta"); len(got) != 3 {
		t.Fatalf("ledger after a second carrier: %q", got)
	}
	// The first carrier, having handed it over, removes beta's copy.
	e.pickup(c, "beta")
	if got := e.receipts("beta", "alpha"); len(got) != 0 {
		t.Fatalf("beta still holds receipts %v after they went home", got)
	}
}

// Identical content found in the inbox counts as delivered, and gets a
// receipt all the same.
func testReceiptAlreadyThere(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{"x": []byte("same")})
	writeAt(t, filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "x"), []byte("same"))
	c := e.Carrier(1<<30, carrier.Options{})
	e.pickup(c, "alpha")
	rs := e.Dropoff(c, "beta")
	MustOK(t, rs)
	if rs[0].Already != 1 {
		t.Fatalf("dropoff: %s, want 1 found there", rs[0].Summary())
	}
	if got := e.receipts("beta", "alpha"); len(got) != 1 {
		t.Fatalf("beta holds receipts %v, want one", got)
	}
	e.pickup(c, "alpha")
	if l := e.ledger("alpha", "beta"); len(l) != 1 || !strings.HasSuffix(l[0], " x") {
		t.Fatalf("ledger %q, want the line of x", l)
	}
}

func writeAt(t *testing.T, p string, data []byte) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// In keep mode a pickup leaves the file under a lease; the carrier does
// not carry it twice; its receipt removes exactly the version carried: one
// saved after the pickup stays.
func testKeepExactVersion(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{"a": []byte("version 1"), "b": []byte("b1")})
	c := e.Carrier(1<<30, carrier.Options{})
	if r := e.pickup(c, "alpha"); r.Files != 2 || r.Kept != 2 {
		t.Fatalf("pickup: %s kept %d, want 2 carried and kept", r.Summary(), r.Kept)
	}
	out := e.OutboxFiles("alpha")
	if string(out["beta/a"]) != "version 1" || out["beta/"+protocol.LeasePrefix+".a"] == nil {
		t.Fatalf("outbox after a keep-mode pickup: %v", keys(out))
	}
	if r := e.pickup(c, "alpha"); r.Files != 0 {
		t.Fatalf("second pickup carried %d files again", r.Files)
	}
	// A new version of b, saved after the pickup.
	bp := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "b")
	writeAt(t, bp, []byte("b2, longer"))
	old := time.Now().Add(-time.Minute)
	os.Chtimes(bp, old, old)
	MustOK(t, e.Dropoff(c, "beta"))
	if r := e.pickup(c, "alpha"); r.Released != 1 {
		t.Fatalf("pickup released %d files, want 1 (a); %s", r.Released, r.Summary())
	}
	out = e.OutboxFiles("alpha")
	if _, ok := out["beta/a"]; ok {
		t.Fatalf("a stayed in the outbox after its receipt: %v", keys(out))
	}
	if _, ok := out["beta/"+protocol.LeasePrefix+".a"]; ok {
		t.Fatalf("a's lease stayed: %v", keys(out))
	}
	if string(out["beta/b"]) != "b2, longer" {
		t.Fatalf("the version of b saved after the pickup is gone: %v", keys(out))
	}
	if l := e.ledger("alpha", "beta"); len(l) != 2 {
		t.Fatalf("ledger %q", l)
	}
}

// A live lease makes another carrier pass the file over; once it has
// expired the next carrier carries it again.
func testLeaseExpiry(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "")
	e.Outbox("alpha", "beta", map[string][]byte{"f": []byte("leased")})
	c1 := e.Carrier(1<<30, carrier.Options{Lease: time.Hour})
	e.pickup(c1, "alpha")
	c2 := e.carrierAt("two", carrier.Options{})
	if r := e.pickup(c2, "alpha"); r.Files != 0 {
		t.Fatalf("a second carrier carried a leased file: %s", r.Summary())
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	c3 := e.carrierAt("three", carrier.Options{Now: later})
	if r := e.pickup(c3, "alpha"); r.Files != 1 || r.Kept != 1 {
		t.Fatalf("after the lease, pickup: %s, want the file carried", r.Summary())
	}
	// A garbage lease is no lease.
	lp := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), protocol.LeasePrefix+".f")
	writeAt(t, lp, []byte("garbage\x00\n"))
	c4 := e.carrierAt("four", carrier.Options{})
	if r := e.pickup(c4, "alpha"); r.Files != 1 {
		t.Fatalf("with a garbage lease, pickup: %s, want the file carried", r.Summary())
	}
	MustOK(t, e.Dropoff(c3, "beta"))
	MustOK(t, e.Dropoff(c4, "beta"))
	SameTree(t, "beta inbox", e.Inbox("beta", "alpha"), map[string][]byte{"f": []byte("leased")})
}

// Markers, leases and receipts are never carried nor delivered as files.
func testMessorNamesStay(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "")
	e.keep("alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{"f": []byte("x"), protocol.LeasePrefix + ".g": []byte("junk"), ".messor-other": []byte("o")})
	// beta's receipts (for gamma) sit in its inbox tree.
	writeAt(t, filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.ReceiptDir("gamma")), "x.receipt"), []byte("r"))
	e.Outbox("beta", "alpha", map[string][]byte{"y": []byte("y")})
	c := e.Carrier(1<<30, carrier.Options{})
	e.pickup(c, "alpha", "beta")
	ents, err := c.Buffer().Entries()
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if strings.Contains(en.Path, ".messor") {
			t.Errorf("carried %s/%s", en.Dest, en.Path)
		}
	}
	if len(ents) != 2 {
		t.Fatalf("carried %d entries, want 2 (f and y)", len(ents))
	}
}

// Receipts that name what they must not: a path out of the outbox, a
// source other than their directory's, content other than the outbox's.
// None is taken, and none removes anything.
func testHostileReceipts(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "")
	victim := map[string][]byte{"v": []byte("victim"), "w": []byte("w")}
	e.Outbox("alpha", "beta", victim)
	vst, _ := os.Stat(filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "v"))
	at := time.Now()
	put := func(source string, r protocol.Receipt) {
		b := protocol.FormatReceipt(r)
		name, _ := protocol.ReceiptName(at, "evil", b)
		writeAt(t, filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.ReceiptDir(source)), name), b)
	}
	wrongHash := strings.Repeat("ab", 32)
	d := protocol.Delivery{Path: "v", Size: vst.Size(), MTime: vst.ModTime(), Hash: wrongHash, At: at, Carrier: "evil"}
	put("alpha", protocol.Receipt{Source: "alpha", Dest: "beta", Files: []protocol.Delivery{d}}) // not its content
	esc := d
	esc.Path = "../../sent/beta.log"
	b := strings.Replace(string(protocol.FormatReceipt(protocol.Receipt{Source: "alpha", Dest: "beta", Files: []protocol.Delivery{d}})), " v\n", " "+esc.Path+"\n", 1)
	writeAt(t, filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.ReceiptDir("alpha")), "1.evil.0123456789abcdef.receipt"), []byte(b))
	put("alpha", protocol.Receipt{Source: "gamma", Dest: "beta", Files: []protocol.Delivery{d}}) // in alpha's directory
	c := e.Carrier(1<<30, carrier.Options{})
	if r := e.pickup(c, "beta"); r.Collected != 1 {
		t.Fatalf("collected %d receipts, want only the well-formed one", r.Collected)
	}
	r := e.pickup(c, "alpha")
	if r.Released != 0 {
		t.Fatalf("a receipt for other content removed %d files", r.Released)
	}
	got := e.OutboxFiles("alpha")
	for k, v := range victim {
		if string(got["beta/"+k]) != string(v) {
			t.Fatalf("outbox lost %s: %v", k, keys(got))
		}
	}
}

// A carrier killed between appending to the ledger and forgetting its
// receipts (the receipts still in its buffer, the file removed) hands them
// over again on the next visit: no line twice, nothing else removed.
func testKilledBeforeForget(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{"k": []byte("kept")})
	c := e.Carrier(1<<30, carrier.Options{})
	e.pickup(c, "alpha")
	MustOK(t, e.Dropoff(c, "beta"))
	held := filepath.Join(e.Buf, "receipts")
	saved := testenv.ReadTree(t, held)
	if len(saved) != 1 {
		t.Fatalf("buffer holds %d receipts, want 1", len(saved))
	}
	if r := e.pickup(c, "alpha"); r.Receipts != 1 || r.Released != 1 {
		t.Fatalf("hand-over: %d lines, %d released; want 1, 1", r.Receipts, r.Released)
	}
	testenv.WriteTree(t, held, saved) // as if killed before the forget
	// The same name, a new version since: it stays.
	writeAt(t, filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "k"), []byte("kept, v2"))
	if r := e.pickup(c, "alpha"); r.Receipts != 0 || r.Released != 0 {
		t.Fatalf("second hand-over: %d lines, %d released; want 0, 0", r.Receipts, r.Released)
	}
	if l := e.ledger("alpha", "beta"); len(l) != 1 {
		t.Fatalf("ledger %q", l)
	}
	if got := e.OutboxFiles("alpha")["beta/k"]; string(got) != "kept, v2" {
		t.Fatalf("the new version is gone: %q", got)
	}
	if len(testenv.ReadTree(t, held)) != 0 {
		t.Fatal("receipts still held after the second hand-over")
	}
}

// Two carriers handing receipts to one source at once: the ledger holds
// every file's line (a line both held may be there twice), none cut.
func testTwoCarriersAppend(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	c1 := e.Carrier(1<<30, carrier.Options{})
	c2 := e.carrierAt("two", carrier.Options{})
	var want []string
	for i, c := range []*carrier.Carrier{c1, c2} {
		files := map[string][]byte{}
		for j := range 300 {
			name := fmt.Sprintf("c%d/%03d with a long name to fill the ledger's writes.txt", i, j)
			files[name] = []byte(name)
			want = append(want, name)
		}
		e.Outbox("alpha", "beta", files)
		e.pickup(c, "alpha")
		MustOK(t, e.Dropoff(c, "beta"))
	}
	e.pickup(c2, "beta") // c2 now holds c1's receipt too
	var wg sync.WaitGroup
	for _, c := range []*carrier.Carrier{c1, c2} {
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
	got := map[string]bool{}
	for _, l := range e.ledger("alpha", "beta") {
		d, err := protocol.ParseLedgerLine(l)
		if err != nil {
			t.Fatalf("ledger line %q: %v", l, err)
		}
		got[d.Path] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Fatalf("ledger lacks %s (%d of %d paths)", w, len(got), len(want))
		}
	}
}

// A receipt older than ReceiptMaxAge (by its name, and by the
// destination's clock) leaves the destination at the next visit, and is
// not taken along.
func testOldReceiptsExpire(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	old := time.Now().Add(-31 * 24 * time.Hour)
	r := protocol.Receipt{Source: "alpha", Dest: "beta", Files: []protocol.Delivery{
		{Path: "p", Size: 1, MTime: old, Hash: strings.Repeat("ab", 32), At: old, Carrier: "c0ffee"}}}
	b := protocol.FormatReceipt(r)
	name, _ := protocol.ReceiptName(old, "c0ffee", b)
	rp := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.ReceiptDir("alpha")), name)
	writeAt(t, rp, b)
	os.Chtimes(rp, old, old) // old by the destination's clock too
	c := e.Carrier(1<<30, carrier.Options{})
	if r := e.pickup(c, "beta"); r.Collected != 0 {
		t.Fatalf("collected %d old receipts", r.Collected)
	}
	if got := e.receipts("beta", "alpha"); len(got) != 0 {
		t.Fatalf("old receipts stay on beta: %v", got)
	}
}

// A receipt partial left by a carrier killed while writing it is removed
// by a later visit once it is a day old by the destination's clock; a
// fresh one (a carrier writing it now) stays.
func testAbandonedReceiptPartials(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.ReceiptDir("alpha")))
	oldP := filepath.Join(dir, protocol.PartialName("x.receipt", "receipt", "dead"))
	freshP := filepath.Join(dir, protocol.PartialName("y.receipt", "receipt", "live"))
	writeAt(t, oldP, []byte("half a rece"))
	writeAt(t, freshP, []byte("half a rece"))
	old := time.Now().Add(-25 * time.Hour)
	os.Chtimes(oldP, old, old)
	c := e.Carrier(1<<30, carrier.Options{})
	e.pickup(c, "beta")
	if _, err := os.Lstat(oldP); err == nil {
		t.Errorf("an abandoned receipt partial a day old stays on beta")
	}
	if _, err := os.Lstat(freshP); err != nil {
		t.Errorf("a fresh receipt partial was removed: %v", err)
	}
}

// A symbolic link planted under the name of the partial a carrier makes to
// learn the destination's clock (while clearing old receipt partials) is
// not written through: the file it points to, outside the layout, keeps
// its content.
func testClockPartialNotFollowed(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	c := e.Carrier(1<<30, carrier.Options{})
	dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.ReceiptDir("alpha")))
	oldP := filepath.Join(dir, protocol.PartialName("x.receipt", "receipt", "dead"))
	writeAt(t, oldP, []byte("half a rece"))
	old := time.Now().Add(-25 * time.Hour)
	os.Chtimes(oldP, old, old)
	precious := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(precious, []byte("precious"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(precious, filepath.Join(dir, protocol.PartialName("clock", "receipt", c.Buffer().ID()))); err != nil {
		t.Fatal(err)
	}
	e.pickup(c, "beta")
	if b, err := os.ReadFile(precious); err != nil || string(b) != "precious" {
		t.Fatalf("a file outside the layout was written through a link: %q, %v", b, err)
	}
}

// A hand-over cut (as a carrier killed) at the removal of the claim of a
// kept file: the next visit settles the claim (this carrier's, of the
// version it carried: removed) and its lease; one ledger line, nothing
// carried again.
func testHandOverCutAtRemoval(t *testing.T, start StartFunc) {
	h := &relayHost{}
	e := NewEnv(t, relayed(start, h), "alpha")
	e.Start = start
	e.AddHost("beta", true)
	e.keep("alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{"f": []byte("kept")})
	c := e.Carrier(1<<30, carrier.Options{})
	e.pickup(c, "alpha")
	MustOK(t, e.Dropoff(c, "beta"))
	h.set(func(r sftptest.Request) bool {
		return r.Type == sftptest.FxpRemove && strings.HasPrefix(path.Base(r.Path), protocol.ClaimPrefix)
	})
	c.Pickup(context.Background(), e.Resolve("alpha"))
	h.set(nil)
	if r := e.pickup(c, "alpha"); r.Files != 0 {
		t.Fatalf("visit after the cut: %s; want nothing carried", r.Summary())
	}
	for k := range e.OutboxFiles("alpha") {
		if k != "beta/"+protocol.KeepMarker {
			t.Fatalf("outbox holds %s after the receipt", k)
		}
	}
	if l := e.ledger("alpha", "beta"); len(l) != 1 {
		t.Fatalf("ledger %q", l)
	}
}

// A keep-mode outbox bigger than one listing: what one listing holds is
// carried and kept; the rest waits (files leave only with their receipts),
// and the visit is not a failure.
func testKeepBiggerThanListing(t *testing.T, start StartFunc) {
	e := NewEnv(t, start, "alpha", "beta")
	e.keep("alpha", "beta")
	files := map[string][]byte{}
	for i := range 8 {
		files[fmt.Sprintf("f%d", i)] = []byte{byte(i)}
	}
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{MaxListing: 4})
	r := e.pickup(c, "alpha")
	if r.Files == 0 || r.Files == len(files) {
		t.Fatalf("pickup: %s; want part of the outbox carried", r.Summary())
	}
	r = e.pickup(c, "alpha")
	if r.Files != 0 {
		t.Fatalf("second pickup carried %d files again", r.Files)
	}
}
