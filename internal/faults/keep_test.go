package faults

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

// clock is real time moved on by Advance, shared by the carriers of a test,
// so that a lease ends without the test sleeping through it.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// keep puts the keep marker into source's outbox: for every destination
// when dest is "", else for dest.
func (e *env) keep(source, dest string) {
	dir := filepath.Join(e.Dirs[source], filepath.FromSlash(protocol.Outbox), dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keepMarker), nil, 0o644); err != nil {
		e.T.Fatal(err)
	}
}

// visit is c on host's network: it delivers what it carries for host,
// then picks up there (each verb exchanging receipts). It fails the test
// on any failed report.
func (e *env) visit(c *carrier.Carrier, host string) (drop, pick *carrier.HostReport) {
	e.T.Helper()
	h := e.Resolve(host)[0]
	drop = c.DropoffHost(context.Background(), h)
	pick = c.PickupHost(context.Background(), h)
	if err := reportsErr([]*carrier.HostReport{drop, pick}); err != nil {
		e.T.Fatalf("visit to %s: %v", host, err)
	}
	return drop, pick
}

// sent counts the files in source's outbox for dest (messor's own hidden
// files left out).
func (e *env) sent(source, dest string) int {
	n := 0
	for _, rel := range regularFilesNoT(filepath.Join(e.Dirs[source], filepath.FromSlash(protocol.OutboxDir(dest)))) {
		if !strings.HasPrefix(filepath.Base(rel), protocol.ReservedPrefix) {
			n++
		}
	}
	return n
}

// TestLostCarrier: carrier one picks up from a keep-mode outbox and is
// lost (its buffer deleted), or comes back late. Nothing is lost: the
// files stay in the outbox under its lease, which carrier two respects
// until it ends; then carrier two carries and delivers them, and the
// outbox empties once its receipt comes home. One copy arrives, and a late
// carrier delivering the same files adds no copy and no second ledger line.
func TestLostCarrier(t *testing.T) {
	t.Parallel()
	for _, lost := range []bool{true, false} {
		name := map[bool]string{true: "lost", false: "late"}[lost]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			crew := newCrew(t, sshdHosts, 2, "alpha", "beta")
			w := crew[0].world
			crew[0].keep("alpha", "")
			r := rand.New(rand.NewSource(12))
			files := smallTree(r, "lost", 20, 8<<10)
			files["lost/big.bin"] = randBytes(r, 3<<20)
			crew[0].send("alpha", "beta", files)
			n := len(files)
			clk := &clock{}
			opts := carrier.Options{Lease: time.Hour, Now: clk.Now}
			one, two := crew[0].carrier(1<<30, opts), crew[1].carrier(1<<30, opts)

			if _, p := crew[0].visit(one, "alpha"); p.Files != n || p.Kept != n {
				t.Fatalf("carrier one at alpha: %d files carried, %d kept; want %d", p.Files, p.Kept, n)
			}
			if got := crew[0].sent("alpha", "beta"); got != n {
				t.Fatalf("keep mode: %d files left in the outbox after a pickup, want %d", got, n)
			}
			w.CheckOpen(t, one.Buffer(), two.Buffer())
			if lost {
				one.Buffer().Close()
				if err := os.RemoveAll(crew[0].Buf); err != nil {
					t.Fatal(err)
				}
				w.Lose(crew[0].Buf)
				w.CheckOpen(t, two.Buffer()) // nothing lost: the outbox kept it all
			}

			if _, p := crew[1].visit(two, "alpha"); p.Files != 0 {
				t.Fatalf("carrier two carried %d files under carrier one's live lease", p.Files)
			}
			clk.Advance(time.Hour + time.Minute)
			if _, p := crew[1].visit(two, "alpha"); p.Files != n || p.Kept != n {
				t.Fatalf("carrier two, the lease ended: %d files carried, %d kept; want %d", p.Files, p.Kept, n)
			}
			if d, _ := crew[1].visit(two, "beta"); d.Files != n {
				t.Fatalf("carrier two delivered %d files, want %d", d.Files, n)
			}
			open := []*carrier.Buffer{two.Buffer()}
			if !lost {
				open = append(open, one.Buffer())
				if d, _ := crew[0].visit(one, "beta"); d.Files != 0 || d.Already != n {
					t.Fatalf("late carrier one at beta: %d files delivered, %d there already; want 0 and %d", d.Files, d.Already, n)
				}
			}
			w.CheckOpen(t, open...)
			if got := crew[0].sent("alpha", "beta"); got != n {
				t.Fatalf("keep mode: %d files left in the outbox before a receipt came home, want %d", got, n)
			}
			if _, p := crew[1].visit(two, "alpha"); p.Receipts != n || p.Released != n {
				t.Fatalf("carrier two back at alpha: %d ledger lines, %d released; want %d", p.Receipts, p.Released, n)
			}
			if !lost {
				if _, p := crew[0].visit(one, "alpha"); p.Receipts != 0 || p.Released != 0 {
					t.Fatalf("late carrier one back at alpha: %d ledger lines, %d released; want none (home already)", p.Receipts, p.Released)
				}
			}
			w.CheckSettledOpen(t, open...)
			w.CheckHome(t)
		})
	}
}

// TestReceiptRidesHome: carrier A delivers (from a keep-mode outbox and a
// blackhole one) and never comes back; carrier B visits the destinations,
// then the source: the source's ledger names every file, as delivered by
// A, and the keep-mode outbox empties.
func TestReceiptRidesHome(t *testing.T) {
	t.Parallel()
	crew := newCrew(t, sshdHosts, 2, "alpha", "beta", "gamma")
	w := crew[0].world
	crew[0].keep("alpha", "beta")
	r := rand.New(rand.NewSource(13))
	crew[0].send("alpha", "beta", smallTree(r, "kept", 10, 4<<10))
	crew[0].send("alpha", "gamma", smallTree(r, "gone", 10, 4<<10))
	a, b := crew[0].carrier(1<<30, carrier.Options{}), crew[1].carrier(1<<30, carrier.Options{})
	aID := a.Buffer().ID()
	crew[0].visit(a, "alpha")
	crew[0].visit(a, "beta")
	crew[0].visit(a, "gamma")
	a.Buffer().Close()
	if err := os.RemoveAll(crew[0].Buf); err != nil {
		t.Fatal(err)
	}
	w.Lose(crew[0].Buf)
	w.CheckOpen(t, b.Buffer())
	if ds, _ := w.Ledger("alpha"); len(ds) != 0 {
		t.Fatalf("ledger lines before any receipt went home: %v", ds)
	}

	if _, p := crew[1].visit(b, "alpha"); p.Files != 0 || p.Receipts != 0 {
		t.Fatalf("B at alpha first: %d files carried (all leased or delivered), %d ledger lines (none held)", p.Files, p.Receipts)
	}
	for _, dest := range []string{"beta", "gamma"} {
		if _, p := crew[1].visit(b, dest); p.Collected == 0 {
			t.Fatalf("B at %s collected no receipt", dest)
		}
	}
	w.CheckOpen(t, b.Buffer())
	if _, p := crew[1].visit(b, "alpha"); p.Receipts != 20 || p.Released != 10 {
		t.Fatalf("B back at alpha: %d ledger lines, %d released; want 20 and 10", p.Receipts, p.Released)
	}
	ds, _ := w.Ledger("alpha")
	for _, d := range ds {
		if d.Carrier != aID {
			t.Errorf("%s names carrier %q as the one that delivered, want A (%s)", d.Where, d.Carrier, aID)
		}
	}
	w.CheckSettledOpen(t, b.Buffer())
	w.CheckHome(t)
}

// TestChangedWhileLeased: a keep-mode file saved again (a new version)
// after a carrier took it is carried again, and the receipt of the old
// version, coming home after the new one was saved, does not remove it;
// the new version's receipt does. Both versions arrive (the second under
// a conflict name) and the ledger names both.
func TestChangedWhileLeased(t *testing.T) {
	t.Parallel()
	crew := newCrew(t, sshdHosts, 2, "alpha", "beta")
	w := crew[0].world
	crew[0].keep("alpha", "")
	r := rand.New(rand.NewSource(14))
	v1, v2, other := randBytes(r, 5000), randBytes(r, 5000), randBytes(r, 300)
	crew[0].send("alpha", "beta", map[string][]byte{"doc.txt": v1, "other.bin": other})
	a, b := crew[0].carrier(1<<30, carrier.Options{}), crew[1].carrier(1<<30, carrier.Options{})
	open := []*carrier.Buffer{a.Buffer(), b.Buffer()}

	crew[0].visit(a, "alpha")
	crew[0].visit(a, "beta") // v1 delivered; its receipt rides with A
	// The user saves v2 (same size, a later mtime) over doc.txt.
	p := filepath.Join(crew[0].Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "doc.txt")
	if err := os.WriteFile(p, v2, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(-30 * time.Minute)
	os.Chtimes(p, later, later)
	w.Replace("alpha", "beta", "doc.txt", v2)
	w.CheckOpen(t, open...)

	// B, at alpha: v2 is not under A's lease (another version): carried.
	if _, pk := crew[1].visit(b, "alpha"); pk.Files != 1 || pk.Kept != 1 {
		t.Fatalf("B at alpha: %d files carried, %d kept; want v2 alone", pk.Files, pk.Kept)
	}
	// A comes home with v1's receipt: other.bin goes, v2 stays.
	if _, pk := crew[0].visit(a, "alpha"); pk.Receipts != 2 || pk.Released != 1 {
		t.Fatalf("A back at alpha with v1's receipt: %d ledger lines, %d released; want 2 and 1 (other.bin)", pk.Receipts, pk.Released)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != string(v2) {
		t.Fatalf("v1's receipt removed v2 from the outbox (or changed it): %v", err)
	}
	w.CheckOpen(t, open...)
	crew[1].visit(b, "beta")
	if _, pk := crew[1].visit(b, "alpha"); pk.Receipts != 1 || pk.Released != 1 {
		t.Fatalf("B back at alpha with v2's receipt: %d ledger lines, %d released; want 1 and 1", pk.Receipts, pk.Released)
	}
	w.CheckSettledOpen(t, open...)
	w.CheckHome(t)
}
