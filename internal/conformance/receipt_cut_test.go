package conformance

import (
	"context"
	"path"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// receiptCut is a moment of receipt work at which the connection is cut
// (as a carrier killed just before sending that request): the nth request
// (from 1) that match accepts, on the host named.
type receiptCut struct {
	name  string
	host  string // "alpha" (the source) or "beta" (the destination)
	n     int32
	match func(sftptest.Request) bool
	keep  bool // met in keep mode only
}

// isLedgerReq matches a request of type typ on alpha's ledger for beta:
// its lstat is the hand-over's first look at it (it is opened only when
// it is a regular file; the first hand-over finds none), its first open
// the append.
func isLedgerReq(typ byte) func(sftptest.Request) bool {
	return func(r sftptest.Request) bool {
		return r.Type == typ && strings.HasSuffix(r.Path, protocol.LedgerPath("beta"))
	}
}

func isReceiptReq(typ byte) func(sftptest.Request) bool {
	return func(r sftptest.Request) bool {
		return r.Type == typ && strings.Contains(r.Path, protocol.ReceiptsDirName)
	}
}

func isLeaseReq(typ byte) func(sftptest.Request) bool {
	return func(r sftptest.Request) bool {
		return r.Type == typ && strings.HasPrefix(path.Base(r.Path), protocol.LeasePrefix)
	}
}

var receiptCuts = []receiptCut{
	{"ReceiptPartialOpen", "beta", 1, isReceiptReq(sftptest.FxpOpen), false},
	{"ReceiptRename", "beta", 1, isReceiptReq(sftptest.FxpRename), false},
	{"ReceiptRemoved", "beta", 1, isReceiptReq(sftptest.FxpRemove), false},
	{"LedgerRead", "alpha", 1, isLedgerReq(sftptest.FxpLstat), false},
	{"LedgerAppend", "alpha", 1, isLedgerReq(sftptest.FxpOpen), false},
	{"LeaseWrite", "alpha", 1, isLeaseReq(sftptest.FxpOpen), true},
	{"KeptClaim", "alpha", 1, func(r sftptest.Request) bool {
		return r.Type == sftptest.FxpRename && strings.HasPrefix(path.Base(r.Target), protocol.ClaimPrefix)
	}, false},
	// keep mode's pickup removes what stands under each lease's name (two
	// files), then the hand-over removes the leases.
	{"LeaseReplaced", "alpha", 1, isLeaseReq(sftptest.FxpRemove), true},
	{"LeaseRemoved", "alpha", 3, isLeaseReq(sftptest.FxpRemove), true},
}

// TestReceiptCuts cuts the connection at each step of writing a receipt,
// handing it over and releasing a kept file, in keep mode and not, then
// lets the carrier visit the hosts again: every file arrives once, leaves
// the outbox, has one ledger line, and every receipt goes home.
func TestReceiptCuts(t *testing.T) {
	t.Parallel()
	for _, k := range hostKinds {
		for _, keep := range []bool{true, false} {
			for _, cut := range receiptCuts {
				if cut.keep && !keep {
					continue
				}
				mode := "blackhole"
				if keep {
					mode = "keep"
				}
				t.Run(k.name+"/"+mode+"/"+cut.name, func(t *testing.T) {
					t.Parallel()
					testReceiptCut(t, k.start, keep, cut)
				})
			}
		}
	}
}

func testReceiptCut(t *testing.T, start StartFunc, keep bool, cut receiptCut) {
	hs := map[string]*relayHost{"alpha": {}, "beta": {}}
	e := NewEnv(t, relayed(start, hs["alpha"]), "alpha")
	e.Start = relayed(start, hs["beta"])
	e.AddHost("beta", true)
	if keep {
		e.keep("alpha", "beta")
	}
	files := map[string][]byte{"a": []byte("file a"), "d/b": []byte("file b")}
	e.Outbox("alpha", "beta", files)
	var seen atomic.Int32
	hs[cut.host].set(func(r sftptest.Request) bool {
		return cut.match(r) && seen.Add(1) == cut.n
	})
	c := e.Carrier(1<<30, carrier.Options{})
	visit := func(verb string, host string) {
		var rs []*carrier.HostReport
		if verb == "dropoff" {
			rs, _ = c.Dropoff(context.Background(), e.Resolve(host))
		} else {
			rs = c.Pickup(context.Background(), e.Resolve(host))
		}
		for _, r := range rs {
			t.Logf("%s", r.Summary())
		}
	}
	for range 2 { // the second round finishes what the cut left
		visit("pickup", "alpha")
		visit("dropoff", "beta")
		visit("pickup", "beta")
		visit("pickup", "alpha")
		visit("pickup", "beta")
	}
	if seen.Load() < cut.n {
		t.Fatalf("the cut never came (%d of %d requests seen)", seen.Load(), cut.n)
	}
	inbox := e.Inbox("beta", "alpha")
	for p := range inbox {
		if strings.Contains(p, protocol.ReservedPrefix) {
			t.Logf("beta's inbox holds %s", p)
			delete(inbox, p)
		}
	}
	SameTree(t, "beta's inbox", inbox, files)
	for p := range e.OutboxFiles("alpha") {
		if p != "beta/"+protocol.KeepMarker {
			t.Errorf("alpha's outbox still holds %s", p)
		}
	}
	keys := map[string]int{}
	for _, l := range e.ledger("alpha", "beta") {
		d, err := protocol.ParseLedgerLine(l)
		if err != nil {
			t.Fatalf("ledger line %q: %v", l, err)
		}
		keys[d.Path]++
	}
	for p := range files {
		if keys[p] != 1 {
			t.Errorf("the ledger names %s %d times, want once", p, keys[p])
		}
	}
	if len(keys) != len(files) {
		t.Errorf("the ledger names %v, want %d files", keys, len(files))
	}
	if got := e.receipts("beta", "alpha"); len(got) != 0 {
		t.Errorf("beta still holds receipts %v", got)
	}
	if st, _ := carrier.ReadStatus(c.Buffer()); len(st.Hosts) != 0 {
		t.Errorf("the buffer still holds receipts or leases: %+v", st.Hosts)
	}
}
