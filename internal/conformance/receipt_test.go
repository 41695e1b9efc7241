package conformance

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

// TestReceipts runs the receipt and keep-mode tests against sshd with exec,
// sshd without exec and the agent.
func TestReceipts(t *testing.T) {
	kinds := []struct {
		name  string
		start StartFunc
	}{{"OpenSSH", SSHD(false)}, {"OpenSSHNoExec", SSHD(true)}, {"Agent", Agent}}
	tests := []struct {
		name string
		fn   func(*testing.T, StartFunc)
	}{
		{"LedgerWrittenOnce", testLedgerOnce},
		{"ReceiptForContentThere", testReceiptAlreadyThere},
		{"KeepRemovesExactVersion", testKeepExactVersion},
		{"LeaseSkipsThenExpires", testLeaseExpiry},
		{"MessorNamesNeverCarried", testMessorNamesStay},
		{"HostileReceipts", testHostileReceipts},
	}
	for _, k := range kinds {
		for _, tc := range tests {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, k.start)
			})
		}
	}
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
