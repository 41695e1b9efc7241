// Package netns builds throwaway Linux networks for tests: n network
// namespaces joined by one Linux bridge, so that code which must really
// talk over a LAN (mDNS multicast, SSH to another "host") can be tested
// without touching the machine's own network.
//
// Layout of a Net made by New(t, n):
//
//	namespace <prefix>-br:  bridge "br0" (multicast snooping off, so
//	                        multicast is flooded to every port) and the
//	                        bridge-side ends "v0".."v<n-1>" of the veth pairs
//	namespace <prefix>-<i>: "lo" up, "eth0" (the other veth end) with
//	                        10.X.Y.<i+1>/24 and the IPv6 link-local address
//	                        fe80::<i+1>/64 (no duplicate address detection,
//	                        so IPv6 works at once rather than after ~2s),
//	                        multicast on, and a route for 224.0.0.0/4 via eth0
//
// The prefix is "messor-" plus random hex, so parallel runs (and parallel
// tests) never share a namespace name. Nothing is created in the root
// namespace: veth pairs are made inside the bridge namespace with their
// peer placed directly into the node namespace. Everything is deleted by
// t.Cleanup, also when the test fails or New itself fails half-way.
//
// The tests that use it need root and iproute2's ip(8); New calls t.Fatal
// (never t.Skip) when either is missing, because on CI these tests must run.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// Net is a set of network namespaces attached to one bridge.
type Net struct {
	t      testing.TB
	prefix string
	nodes  []string // namespace names, index = node
	ips    []string
	ll6    []string
	bridge string // namespace holding the bridge
}

// MaxNodes is the largest n New accepts (one /24, .1 to .254).
const MaxNodes = 254

// New creates n network namespaces attached to one bridge and registers
// their removal with t.Cleanup. Node i has IPv4 address IP(i) on "eth0"
// and "lo" up; multicast works between all nodes. It calls t.Fatal when
// not running as root, when ip(8) is missing, or when a step fails.
func New(t testing.TB, n int) *Net {
	t.Helper()
	if n < 1 || n > MaxNodes {
		t.Fatalf("netns.New: n = %d, want 1..%d", n, MaxNodes)
	}
	if uid := os.Geteuid(); uid != 0 {
		t.Fatalf("netns.New: network namespace tests must run as root (uid is %d); run them as root, as CI does", uid)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("netns.New: ip(8) from iproute2 is needed (apt-get install iproute2): %v", err)
	}

	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("netns.New: random suffix: %v", err)
	}
	nt := &Net{
		t:      t,
		prefix: "messor-" + hex.EncodeToString(rnd[:]),
	}
	nt.bridge = nt.prefix + "-br"
	// The subnet only has to be unique within this Net (each Net has its
	// own bridge), but varying it makes mixed-up addresses easier to spot.
	x, y := 64+int(rnd[0])%64, int(rnd[1])

	// Registered before anything exists, so a failure half-way through
	// still removes whatever was created.
	var created []string
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			if out, err := exec.Command("ip", "netns", "delete", created[i]).CombinedOutput(); err != nil {
				t.Errorf("netns: deleting namespace %s: %v: %s", created[i], err, bytes.TrimSpace(out))
			}
		}
	})

	addNS := func(name string) {
		t.Helper()
		nt.ip("netns", "add", name)
		created = append(created, name)
	}

	addNS(nt.bridge)
	nt.ip("-n", nt.bridge, "link", "set", "lo", "up")
	nt.ip("-n", nt.bridge, "link", "add", "br0", "type", "bridge",
		"mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
	nt.ip("-n", nt.bridge, "link", "set", "br0", "multicast", "on", "up")

	for i := 0; i < n; i++ {
		ns := nt.prefix + "-" + strconv.Itoa(i)
		addr := fmt.Sprintf("10.%d.%d.%d", x, y, i+1)
		addNS(ns)
		nt.nodes = append(nt.nodes, ns)
		nt.ips = append(nt.ips, addr)
		ll := fmt.Sprintf("fe80::%x", i+1)
		nt.ll6 = append(nt.ll6, ll)

		veth := "v" + strconv.Itoa(i)
		nt.ip("-n", nt.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		nt.ip("-n", nt.bridge, "link", "set", veth, "master", "br0")
		nt.ip("-n", nt.bridge, "link", "set", veth, "multicast", "on", "up")

		nt.ip("-n", ns, "link", "set", "lo", "up")
		nt.ip("-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
		nt.ip("-n", ns, "link", "set", "eth0", "addrgenmode", "none")
		nt.ip("-n", ns, "addr", "add", ll+"/64", "dev", "eth0", "nodad")
		nt.ip("-n", ns, "link", "set", "eth0", "multicast", "on", "up")
		nt.ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
	}
	return nt
}

// ip runs ip(8) with args and fails the test on error.
func (nt *Net) ip(args ...string) {
	nt.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		nt.t.Fatalf("netns: ip %v: %v: %s", args, err, bytes.TrimSpace(out))
	}
}

// Len is the number of nodes.
func (nt *Net) Len() int { return len(nt.nodes) }

// NS is the name of node i's network namespace (as in ip netns list).
func (nt *Net) NS(i int) string { return nt.nodes[i] }

// IP is node i's IPv4 address on eth0, without the prefix length.
func (nt *Net) IP(i int) string { return nt.ips[i] }

// LinkLocal6 is node i's IPv6 link-local address on eth0, without zone.
func (nt *Net) LinkLocal6(i int) string { return nt.ll6[i] }

// Command returns a command that runs name with args inside node i's
// namespace (via "ip netns exec", which execs name in its own process). It
// is not started. If it was started and is still running when the test's
// cleanups reach it, it is killed: cleanups registered after Command run
// first (they may stop it gracefully), the namespaces are deleted last.
// The child inherits the test's environment unless cmd.Env is set.
func (nt *Net) Command(i int, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", nt.nodes[i], name}, args...)...)
	nt.t.Cleanup(func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill() // os.ErrProcessDone if it has been waited for
		}
	})
	return cmd
}
