package faults

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
)

// fleetParams are the fleet's size and length: MESSOR_FLEET_HOSTS (N),
// MESSOR_FLEET_CARRIERS (C), MESSOR_FLEET_VISITS (V), MESSOR_FLEET_LEASE
// (the lease, in visits: the fleet's clock moves one hour a visit, so the
// default, 168, is messor's 7 days) and MESSOR_FLEET_SEED.
type fleetParams struct{ hosts, carriers, visits, lease, seed int }

func fleetFromEnv(t *testing.T) fleetParams {
	p := fleetParams{hosts: 6, carriers: 3, visits: 60, lease: 168, seed: 1}
	for name, v := range map[string]*int{"HOSTS": &p.hosts, "CARRIERS": &p.carriers, "VISITS": &p.visits, "LEASE": &p.lease, "SEED": &p.seed} {
		if s := os.Getenv("MESSOR_FLEET_" + name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("MESSOR_FLEET_%s=%q: want a positive number", name, s)
			}
			*v = n
		}
	}
	if p.hosts < 2 {
		t.Fatal("MESSOR_FLEET_HOSTS: a fleet needs 2 hosts at least")
	}
	return p
}

// fileLife is when (at which visit) a file was written, delivered and
// named by its source's ledger (-1: not yet).
type fileLife struct{ written, delivered, home int }

// fleet is the state of a fleet run.
type fleet struct {
	t        *testing.T
	p        fleetParams
	r        *rand.Rand
	crew     []*env
	carriers []*carrier.Carrier
	hosts    []string
	clk      *clock
	life     map[Key]*fileLife
	visits   int
	// Sums of the visits' reports.
	picked, delivered, already, receipts, collected int
}

// TestFleet: N hosts each sending to every other, C carriers visiting
// hosts in a seeded random order for V visits while hosts write new files
// between visits, about a third of the outboxes in keep mode (whole or
// per destination). The hosts are stock sshd offering SFTP alone. The invariant (nothing lost, no receipt naming an
// undelivered file, keep mode left only with a receipt home, no duplicate)
// holds after every visit; after a final sweep (every carrier visiting
// every host, until done) every file is delivered exactly once and every
// receipt is home. It logs the figures docs/BENCHMARKS.md reports.
func TestFleet(t *testing.T) {
	t.Parallel()
	p := fleetFromEnv(t)
	f := &fleet{t: t, p: p, r: rand.New(rand.NewSource(int64(p.seed))), clk: &clock{}, life: map[Key]*fileLife{}}
	for i := 1; i <= p.hosts; i++ {
		f.hosts = append(f.hosts, fmt.Sprintf("h%02d", i))
	}
	f.crew = newCrew(t, sftpOnlyHosts, p.carriers, f.hosts...)
	opts := carrier.Options{Lease: time.Duration(p.lease) * time.Hour, Now: f.clk.Now}
	for _, e := range f.crew {
		f.carriers = append(f.carriers, e.carrier(1<<30, opts))
	}
	keep := f.markKeep()
	for _, src := range f.hosts {
		for _, dst := range f.hosts {
			if src != dst {
				f.write(src, dst)
			}
		}
	}

	for v := 0; v < p.visits; v++ {
		c := f.r.Intn(p.carriers)
		f.visit(c, f.hosts[f.r.Intn(len(f.hosts))])
		for n := f.r.Intn(3); n > 0; n-- { // 0 to 2 new files a visit
			src := f.hosts[f.r.Intn(len(f.hosts))]
			dst := f.hosts[f.r.Intn(len(f.hosts))]
			if src != dst {
				f.write(src, dst)
			}
		}
	}
	main := f.visits
	for sweep := 0; !f.done(); sweep++ {
		if sweep == 4 {
			t.Fatalf("not every file delivered with its receipt home after %d sweeps", sweep)
		}
		for c := range f.carriers {
			for _, h := range f.hosts {
				f.visit(c, h)
			}
		}
	}
	w := f.crew[0].world
	w.CheckSettledOpen(t, f.open()...)
	w.CheckHome(t)
	f.report(keep, main)
}

// markKeep puts keep markers into about a third of the outboxes: a host's
// whole outbox, or its outbox for one destination. It returns how many
// (source, dest) outboxes are in keep mode.
func (f *fleet) markKeep() int {
	e := f.crew[0]
	for _, src := range f.hosts {
		switch f.r.Intn(6) {
		case 0, 1:
			e.keep(src, "")
		case 2:
			dst := src
			for dst == src {
				dst = f.hosts[f.r.Intn(len(f.hosts))]
			}
			e.keep(src, dst)
		}
	}
	n := 0
	for _, src := range f.hosts {
		for _, dst := range f.hosts {
			if src != dst && e.world.KeepMode(src, dst) {
				n++
			}
		}
	}
	return n
}

// write has src write a new small file for dst.
func (f *fleet) write(src, dst string) {
	name := fmt.Sprintf("v%03d/%s-%04x.bin", f.visits, src, f.r.Intn(1<<16))
	f.crew[0].send(src, dst, map[string][]byte{name: randBytes(f.r, 1+f.r.Intn(4<<10))})
	f.life[Key{src, dst, name}] = &fileLife{written: f.visits, delivered: -1, home: -1}
}

func (f *fleet) open() []*carrier.Buffer {
	var out []*carrier.Buffer
	for _, c := range f.carriers {
		out = append(out, c.Buffer())
	}
	return out
}

// visit is carrier c's visit to host h: one hour on the fleet's clock, a
// dropoff and a pickup, then the invariant, and what became of each file.
func (f *fleet) visit(c int, h string) {
	f.t.Helper()
	f.clk.Advance(time.Hour)
	drop, pick := f.crew[c].visit(f.carriers[c], h)
	f.visits++
	f.picked += pick.Files
	f.delivered += drop.Files
	f.already += drop.Already
	f.receipts += pick.Receipts + drop.Receipts
	f.collected += pick.Collected + drop.Collected
	w := f.crew[0].world
	w.CheckOpen(f.t, f.open()...)
	ledger, _ := w.Ledger(h)
	for k, l := range f.life {
		if k.Dest == h && l.delivered < 0 {
			if got, err := os.ReadFile(w.inboxPath(k)); err == nil && bytes.Equal(got, w.Sent[k]) {
				l.delivered = f.visits
			}
		}
		if k.Source == h && l.home < 0 && named(ledger, k, fmt.Sprintf("%x", sha256.Sum256(w.Sent[k]))) {
			l.home = f.visits
		}
	}
}

// done reports whether every file is delivered with its receipt home.
func (f *fleet) done() bool {
	for _, l := range f.life {
		if l.delivered < 0 || l.home < 0 {
			return false
		}
	}
	return true
}

// report logs the fleet's figures.
func (f *fleet) report(keep, main int) {
	var late, trip []int
	for _, l := range f.life {
		late = append(late, l.home-l.delivered)
		trip = append(trip, l.delivered-l.written)
	}
	n := len(f.life)
	f.t.Logf("fleet: %d hosts, %d carriers, %d visits (lease %d visits, seed %d), %d of %d outboxes in keep mode", f.p.hosts, f.p.carriers, f.p.visits, f.p.lease, f.p.seed, keep, f.p.hosts*(f.p.hosts-1))
	f.t.Logf("fleet: %d files delivered exactly once, every receipt home, after %d visits (%d + a final sweep of %d): %.2f visits per delivery",
		n, f.visits, main, f.visits-main, float64(f.visits)/float64(n))
	f.t.Logf("fleet: duplicate transfers: %d pickups of a file carried already, %d deliveries found there already (%d pickups, %d uploads in all)",
		f.picked-n, f.already, f.picked, f.delivered)
	f.t.Logf("fleet: visits from writing to delivery: median %d, max %d; receipts' delay, delivery to ledger line at the source: median %d, max %d visits",
		median(trip), slices.Max(trip), median(late), slices.Max(late))
}

func median(xs []int) int {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
