package conformance

import (
	"context"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// relayHost is a host behind an sftptest relay whose hook a test sets
// between visits.
type relayHost struct {
	dir  string // login directory
	mu   sync.Mutex
	hook func(sftptest.Request) bool
}

func (h *relayHost) set(hook func(sftptest.Request) bool) {
	h.mu.Lock()
	h.hook = hook
	h.mu.Unlock()
}

func (h *relayHost) see(r sftptest.Request) bool {
	h.mu.Lock()
	hook := h.hook
	h.mu.Unlock()
	return hook != nil && hook(r)
}

// local is the host's file for an SFTP path (relative to the login
// directory, as the carrier sends them).
func (h *relayHost) local(p string) string {
	return filepath.Join(h.dir, filepath.FromSlash(strings.TrimPrefix(p, "/")))
}

// relayed starts hosts with start behind a relay that shows h.hook every
// SFTP request of the carrier.
func relayed(start StartFunc, h *relayHost) StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) Host {
		signer, _ := sshdtest.NewKey(t)
		inner := start(t, dir, append(keys, signer.PublicKey()))
		host, port := inner.Addr()
		h.dir = dir
		return sftptest.StartRelay(t, keys, net.JoinHostPort(host, strconv.Itoa(port)), "root", signer, h.see)
	}
}

// hostKinds are the kinds of host the suite runs against.
var hostKinds = []struct {
	name  string
	start StartFunc
}{{"sshd", SSHD(false)}, {"sshd-noexec", SSHD(true)}, {"agent", Agent}}

// hostCase is one test of a table run against every host kind.
type hostCase struct {
	name string
	fn   func(*testing.T, StartFunc)
}

// runOnHostKinds runs every case against every host kind, in parallel,
// as <kind>/<case>.
func runOnHostKinds(t *testing.T, cases []hostCase) {
	for _, k := range hostKinds {
		for _, tc := range cases {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, k.start)
			})
		}
	}
}

// TestClaim: a carried file leaves the outbox by a claim, so a new version
// saved over it (temp file renamed over the name, as editors save) at the
// moment of the claim or of the removal is never lost, and a claim left by
// a carrier that stopped is settled by the next visit, whether its version
// was carried or not. Against sshd with and without exec, and the agent.
func TestClaim(t *testing.T) {
	t.Parallel()
	for _, k := range hostKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			t.Run("new version at the claim", func(t *testing.T) { testClaimSwap(t, k.start, sftptest.FxpRename) })
			t.Run("new version at the removal", func(t *testing.T) { testClaimSwap(t, k.start, sftptest.FxpRemove) })
			t.Run("newer version at the put-back", func(t *testing.T) { testClaimPutBackTaken(t, k.start) })
			t.Run("stopped after claiming", func(t *testing.T) { testClaimStopped(t, k.start) })
			t.Run("another carrier's claims", func(t *testing.T) { testForeignClaims(t, k.start) })
		})
	}
}

var (
	claimV1 = []byte("version 1\n")
	claimV2 = []byte("version 2, longer\n")
)

// saveOver saves data over p the way editors do: a temp file renamed over
// it, with an mtime an hour old (so that it is not "still being written").
func saveOver(t *testing.T, p string, data []byte) {
	tmp := p + ".tmp~"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Error(err)
	}
	old := time.Now().Add(-90 * time.Minute)
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Error(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Error(err)
	}
}

func isClaimOf(r sftptest.Request, p string) bool {
	return strings.HasPrefix(path.Base(r.Target), protocol.ClaimPrefix) && strings.HasSuffix(r.Path, p)
}

// carriedContents is what the carrier's buffer holds, by content.
func carriedContents(t *testing.T, c *carrier.Carrier) map[string]int {
	t.Helper()
	st, err := carrier.ReadStatus(c.Buffer())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, it := range st.Items {
		b, err := os.ReadFile(c.Buffer().ObjectPath(it.Hash))
		if err != nil {
			t.Fatal(err)
		}
		out[string(b)]++
	}
	return out
}

// carriedAll runs a visit that must leave alpha's outbox empty, and checks
// that the buffer then holds each of want once, and nothing else.
func carriedAll(t *testing.T, e *Env, c *carrier.Carrier, want ...[]byte) {
	t.Helper()
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	SameTree(t, "outbox after the last visit", e.OutboxFiles("alpha"), map[string][]byte{})
	got := carriedContents(t, c)
	ok := len(got) == len(want)
	for _, w := range want {
		ok = ok && got[string(w)] == 1
	}
	if !ok {
		t.Errorf("carried %v, want %q once each", got, want)
	}
}

func newClaimEnv(t *testing.T, start StartFunc) (*Env, *relayHost, *carrier.Carrier) {
	h := &relayHost{}
	e := NewEnv(t, relayed(start, h), "alpha")
	e.Outbox("alpha", "beta", map[string][]byte{"f.txt": claimV1})
	return e, h, e.Carrier(1<<20, carrier.Options{})
}

// testClaimSwap saves version 2 over the outbox file at the moment the
// carrier sends the request of type at for it (the claim, or the removal):
// version 2 stays in the outbox, the next visit carries it, nothing is lost.
func testClaimSwap(t *testing.T, start StartFunc, at byte) {
	e, h, c := newClaimEnv(t, start)
	var once sync.Once
	fired := false
	h.set(func(r sftptest.Request) bool {
		if r.Type == at && (at == sftptest.FxpRename && isClaimOf(r, "beta/f.txt") ||
			at == sftptest.FxpRemove && strings.Contains(r.Path, "outbox/beta/")) {
			once.Do(func() { fired = true; saveOver(t, h.local("messor/outbox/beta/f.txt"), claimV2) })
		}
		return false
	})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	h.set(nil)
	if !fired {
		t.Fatal("the carrier never sent the request the new version was to be saved at")
	}
	SameTree(t, "outbox after the first visit", e.OutboxFiles("alpha"), map[string][]byte{"beta/f.txt": claimV2})
	carriedAll(t, e, c, claimV1, claimV2)
}

// testClaimPutBackTaken: version 2 is claimed, and version 3 saved under
// the name before version 2 is put back: both are kept, version 2 under a
// conflict name, and both are carried on the next visit.
func testClaimPutBackTaken(t *testing.T, start StartFunc) {
	e, h, c := newClaimEnv(t, start)
	v3 := []byte("version 3, the longest of all\n")
	var claimed, saved sync.Once
	h.set(func(r sftptest.Request) bool {
		switch {
		case r.Type == sftptest.FxpRename && isClaimOf(r, "beta/f.txt"):
			claimed.Do(func() { saveOver(t, h.local(r.Path), claimV2) })
		case r.Type == sftptest.FxpLstat && strings.HasPrefix(path.Base(r.Path), protocol.ClaimPrefix):
			saved.Do(func() { saveOver(t, h.local("messor/outbox/beta/f.txt"), v3) })
		}
		return false
	})
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	MustOK(t, rs)
	h.set(nil)
	t.Logf("%s; waiting %v", rs[0].Summary(), rs[0].Waiting)
	if len(rs[0].Waiting) != 1 || !strings.Contains(rs[0].Waiting[0].Reason, "as f (2).txt") {
		t.Errorf("waiting %v: the new version put back under another name is not reported", rs[0].Waiting)
	}
	SameTree(t, "outbox after the first visit", e.OutboxFiles("alpha"), map[string][]byte{"beta/f.txt": v3, "beta/f (2).txt": claimV2})
	carriedAll(t, e, c, claimV1, claimV2, v3)
}

// testClaimStopped cuts the connection right after a claim (as a carrier
// killed there): the next visit settles the claim, removing it when its
// version was carried, putting it back when it holds a new version.
func testClaimStopped(t *testing.T, start StartFunc) {
	t.Run("carried", func(t *testing.T) {
		e, h, c := newClaimEnv(t, start)
		stopAtClaimRemoval(t, e, h, c)
		carriedAll(t, e, c, claimV1)
	})
	t.Run("not carried", func(t *testing.T) {
		e, h, c := newClaimEnv(t, start)
		h.set(func(r sftptest.Request) bool {
			if r.Type != sftptest.FxpRename || !isClaimOf(r, "beta/f.txt") {
				return false
			}
			// Version 2 is saved, then claimed, and the carrier stops
			// before it looks at what it claimed.
			saveOver(t, h.local(r.Path), claimV2)
			if err := os.Rename(h.local(r.Path), h.local(r.Target)); err != nil {
				t.Error(err)
			}
			return true
		})
		c.Pickup(context.Background(), e.Resolve("alpha"))
		h.set(nil)
		MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
		SameTree(t, "outbox after the next visit", e.OutboxFiles("alpha"), map[string][]byte{"beta/f.txt": claimV2})
		carriedAll(t, e, c, claimV1, claimV2)
	})
}

// testForeignClaims: another carrier's claim older than a bound (that
// carrier is taken for lost) is put back, beside a newer file of the same
// name if there is one; a young one is left alone.
func testForeignClaims(t *testing.T, start StartFunc) {
	e, h, c := newClaimEnv(t, start)
	dir := h.local(protocol.OutboxDir("beta"))
	claim := func(name string, age time.Duration, data []byte) string {
		cn, err := protocol.ClaimName(name, "0ther", time.Now().Add(-age))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, cn), data, 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-2 * time.Hour)
		os.Chtimes(filepath.Join(dir, cn), old, old)
		return cn
	}
	claim("lost.txt", 2*time.Hour, []byte("lost\n"))
	claim("f.txt", 3*time.Hour, []byte("lost too\n")) // f.txt is taken
	young := claim("busy.txt", time.Minute, []byte("busy\n"))
	// A name too long for a claim name comes back shortened.
	long := claim(strings.Repeat("long name ", 24)+".txt", 2*time.Hour, []byte("long\n"))
	short, err := protocol.ParseClaim(long)
	if err != nil || short.Exact {
		t.Fatalf("ParseClaim(%q) = %+v, %v", long, short, err)
	}
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	SameTree(t, "outbox after a visit", e.OutboxFiles("alpha"), map[string][]byte{
		"beta/lost.txt": []byte("lost\n"), "beta/f (2).txt": []byte("lost too\n"), "beta/" + young: []byte("busy\n"),
		"beta/" + short.Name: []byte("long\n"),
	})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	SameTree(t, "outbox after the next visit", e.OutboxFiles("alpha"), map[string][]byte{"beta/" + young: []byte("busy\n")})
	if got := carriedContents(t, c); len(got) != 4 {
		t.Errorf("carried %v, want f.txt and the three put back", got)
	}
}

func firstKey(m map[string][]byte) string {
	for k := range m {
		return k
	}
	return ""
}

// TestDirectoryGoneWhileListed: a destination directory deleted between the
// outbox's listing and its own is reported and passed over, not a failure,
// and the rest of the outbox is carried. Against sshd with and without
// exec, and the agent.
func TestDirectoryGoneWhileListed(t *testing.T) {
	t.Parallel()
	for _, k := range hostKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			h := &relayHost{}
			e := NewEnv(t, relayed(k.start, h), "alpha")
			e.Outbox("alpha", "beta", map[string][]byte{"f.txt": claimV1})
			e.Outbox("alpha", "gone", map[string][]byte{"sub/g.txt": claimV2})
			h.set(func(r sftptest.Request) bool {
				if r.Type == sftptest.FxpOpendir && strings.HasSuffix(r.Path, "outbox/gone") {
					if err := os.RemoveAll(h.local(r.Path)); err != nil {
						t.Error(err)
					}
				}
				return false
			})
			c := e.Carrier(1<<20, carrier.Options{})
			rs := c.Pickup(context.Background(), e.Resolve("alpha"))
			MustOK(t, rs)
			if !slices.Contains(rs[0].Skipped, carrier.FileNote{Path: "gone/", Reason: "directory gone while listed"}) {
				t.Errorf("skipped %v: gone/ not reported", rs[0].Skipped)
			}
			SameTree(t, "outbox", e.OutboxFiles("alpha"), map[string][]byte{})
			if got := carriedContents(t, c); got[string(claimV1)] != 1 || len(got) != 1 {
				t.Errorf("carried %v, want f.txt", got)
			}
		})
	}
}
