package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/internal/testenv"
)

// A host at an address not on a local network (100.64.0.0/10, carrier-
// grade NAT, counts as remote) is skipped unless marked remote or
// --allow-remote; a metered connection holds every host unless
// --allow-metered. Each says which rule held it; neither is a failure.
func TestRemoteAndMetered(t *testing.T) {
	// 127.0.0.2 stands for a remote address (as 100.64.0.0/10, say,
	// which discovery's own test covers): the test's traffic never leaves
	// loopback.
	const addr = "127.0.0.2"
	defer func(f func(netip.Addr) bool) { localAddr = f }(localAddr)
	localAddr = func(ip netip.Addr) bool { return ip != netip.MustParseAddr(addr) && discovery.LocalAddr(ip) }
	w := newWorld(t, "alpha")
	w.dirs["far"] = testenv.NewHostDir(t)
	s := sshdtest.Start(t, sshdtest.Options{LoginDir: w.dirs["far"], ListenAddress: addr, AuthorizedKeys: []ssh.PublicKey{w.home.Key.PublicKey()}})
	w.home.AddHost("far", s, true)
	w.home.WriteHostsFile("far", "alpha")
	w.outbox("far", "beta", map[string][]byte{"f.txt": []byte("far\n")})
	w.outbox("alpha", "beta", map[string][]byte{"a.txt": []byte("near\n")})
	ctx := context.Background()

	code, out, errs := w.messor(ctx, "pickup")
	if code != 0 || !strings.Contains(out, "pickup: far: skipped: "+s.Addr+" is not on a local network") || !strings.Contains(out, "mark the host `remote` in the hosts file or pass --allow-remote") || !strings.Contains(out, "pickup: alpha: picked up 1 file(s)") {
		t.Errorf("pickup with a remote host: exit %d\n%s%s", code, out, errs)
	}
	if got := testenv.ReadTree(t, filepath.Join(w.dirs["far"], "messor", "outbox", "beta")); len(got) != 1 {
		t.Errorf("far's outbox after it was held: %v", got)
	}
	if code, out, errs = w.messor(ctx, "--allow-remote", "pickup", "far"); code != 0 || !strings.Contains(out, "pickup: far: picked up 1 file(s)") {
		t.Errorf("--allow-remote: exit %d\n%s%s", code, out, errs)
	}
	w.outbox("far", "beta", map[string][]byte{"g.txt": []byte("far again\n")})
	w.home.WriteHostsFile("far remote", "alpha")
	if code, out, errs = w.messor(ctx, "pickup"); code != 0 || !strings.Contains(out, "pickup: far: picked up 1 file(s)") {
		t.Errorf("far marked remote: exit %d\n%s%s", code, out, errs)
	}

	defer func(p func(context.Context) (bool, string)) { meteredProbe = p }(meteredProbe)
	meteredProbe = func(context.Context) (bool, string) { return true, "NetworkManager" }
	w.outbox("alpha", "beta", map[string][]byte{"b.txt": []byte("near again\n")})
	code, out, errs = w.messor(ctx, "pickup", "--json")
	var rep carrier.RunReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Hosts) != 2 || rep.Hosts[1].Outcome != "held" || !strings.Contains(rep.Hosts[1].Reason, "the connection is metered (NetworkManager); pass --allow-metered") {
		t.Errorf("pickup on a metered connection: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = w.messor(ctx, "--allow-metered", "pickup", "alpha"); code != 0 || !strings.Contains(out, "pickup: alpha: picked up 1 file(s)") {
		t.Errorf("--allow-metered: exit %d\n%s%s", code, out, errs)
	}
}
