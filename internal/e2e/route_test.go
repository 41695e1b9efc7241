package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/netns"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// routeNet is the network of the route tests, three namespaces:
//
//	node 0: the carrier         on the bridge
//	node 1: the jump host       on the bridge, and on a link of its own to node 2
//	node 2: the target "office" on that link only (its bridge port is down)
//
// so the target can be reached only through the jump host (which does not
// forward IP: only its sshd's direct-tcpip channels get through).
type routeNet struct {
	nt             *netns.Net
	jumpIP, jumpIn string // the jump host on the bridge, and on its link to the target
	targetIP       string // the target, on that link
}

func newRouteNet(t *testing.T) *routeNet {
	t.Helper()
	nt := netns.New(t, 3)
	var b [1]byte
	rand.Read(b[:])
	r := &routeNet{nt: nt, jumpIP: nt.IP(1), jumpIn: fmt.Sprintf("10.201.%d.1", b[0]), targetIP: fmt.Sprintf("10.201.%d.2", b[0])}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("-n", nt.NS(1), "link", "add", "inner", "type", "veth", "peer", "name", "inner", "netns", nt.NS(2))
	ip("-n", nt.NS(1), "addr", "add", r.jumpIn+"/24", "dev", "inner")
	ip("-n", nt.NS(2), "addr", "add", r.targetIP+"/24", "dev", "inner")
	ip("-n", nt.NS(1), "link", "set", "inner", "up")
	ip("-n", nt.NS(2), "link", "set", "inner", "up")
	ip("-n", nt.NS(2), "link", "set", "eth0", "down")
	return r
}

// TestProxyJump: a host behind "ProxyJump jump" is picked up from and
// delivered to through the jump host, whose sshd logs the carrier's login
// and whose address is the one the target sees; the jump host's key is
// checked like any host's (unknown: refused, naming it and how to trust
// it); and the target cannot be reached directly. ProxyCommand is tested
// on the same network, with OpenSSH's own `ssh -W` as the command.
func TestProxyJump(t *testing.T) {
	requireRootAndIP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rn := newRouteNet(t)
	base := t.TempDir()
	c := &carrierEnv{ctx: ctx, nt: rn.nt, node: 0, home: filepath.Join(base, "carrier"), hosts: filepath.Join(base, "hosts")}
	authorized := newCarrierKey(t, c.home)
	pub, _, _, _, err := ssh.ParseAuthorizedKey(authorized)
	if err != nil {
		t.Fatal(err)
	}
	jumpDir, officeDir := filepath.Join(base, "jump"), filepath.Join(base, "office")
	jump := sshdtest.Start(t, sshdtest.Options{LoginDir: jumpDir, AuthorizedKeys: []ssh.PublicKey{pub},
		Netns: rn.nt.NS(1), ListenAddress: rn.jumpIP, AllowTcpForwarding: true})
	office := sshdtest.Start(t, sshdtest.Options{LoginDir: officeDir, AuthorizedKeys: []ssh.PublicKey{pub},
		Netns: rn.nt.NS(2), ListenAddress: rn.targetIP})
	key := filepath.Join(c.home, ".ssh", "id_ed25519")
	knownHosts := filepath.Join(c.home, ".ssh", "known_hosts")
	writeFile(t, filepath.Join(c.home, ".ssh", "config"), []byte(fmt.Sprintf(`Host office
  HostName %[1]s
  ProxyJump jump
Host office-direct
  HostName %[1]s
Host office-pc
  HostName %[1]s
  ProxyCommand ssh -F /dev/null -i %[3]s -o UserKnownHostsFile=%[4]s -o StrictHostKeyChecking=yes -o BatchMode=yes -W %%h:%%p root@%[2]s
Host office-badpc
  HostName %[1]s
  ProxyCommand /nonexistent/proxy %%h %%p
Host weird
  HostName %[1]s
  RemoteCommand tmux attach
Host jump
  HostName %[2]s
`, rn.targetIP, rn.jumpIP, key, knownHosts)), 0o600)
	// Only the target is trusted at first.
	writeFile(t, knownHosts, []byte(office.KnownHostsLine()+"\n"), 0o600)
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	hosts := func(names ...string) { writeFile(t, c.hosts, []byte(strings.Join(names, "\n")+"\n"), 0o644) }
	officeToJump := tree{"minutes.txt": []byte("from the office, behind the jump host\n"), "big.bin": randomBytes(t, 3<<20)}
	jumpToOffice := tree{"reply.txt": []byte("from the jump host to the office\n")}
	put(t, filepath.Join(officeDir, "messor", "outbox", "jump"), officeToJump, old)
	put(t, filepath.Join(jumpDir, "messor", "outbox", "office"), jumpToOffice, old)

	// The jump host's key is unknown: the office is refused, naming the
	// jump host, its fingerprint and how to trust it.
	hosts("office")
	r := c.run(t, "pickup", "--no-mdns")
	wantCode(t, r, 1)
	wantOutput(t, r, "office", "jump", ssh.FingerprintSHA256(jump.HostKey), "messor trust jump")
	if strings.Contains(office.Log(), "Accepted publickey") {
		t.Fatalf("the target was logged in to past an unknown jump host:\n%s", office.Log())
	}

	// Directly, the office is out of reach from the carrier.
	hosts("office-direct")
	r = c.run(t, "pickup", "--no-mdns")
	wantCode(t, r, 0)
	wantOutput(t, r, "office-direct: skipped, not reachable")

	// Trusted, through the jump host, both ways.
	r = c.run(t, "trust", "jump", "--yes", "--no-mdns")
	wantCode(t, r, 0)
	r = c.run(t, "trust", "office", "--no-mdns")
	wantCode(t, r, 0)
	wantOutput(t, r, "already trusted")
	hosts("office", "jump")
	// One sync: what it picks up is delivered in the same run.
	r = c.run(t, "sync", "--no-mdns")
	wantCode(t, r, 0)
	wantOutput(t, r, "pickup: office: picked up 2 file(s)", "pickup: jump: picked up 1 file(s)",
		"dropoff: office: delivered 1 file(s)", "dropoff: jump: delivered 2 file(s)")
	wantTree(t, "the jump host's inbox from the office", filepath.Join(jumpDir, "messor", "inbox", "office"), officeToJump)
	wantTree(t, "the office's inbox from the jump host", filepath.Join(officeDir, "messor", "inbox", "jump"), jumpToOffice)
	if want := "Accepted publickey for root from " + rn.nt.IP(0) + " "; !strings.Contains(jump.Log(), want) {
		t.Errorf("the jump host's sshd did not log %q:\n%s", want, jump.Log())
	}
	if want := "Accepted publickey for root from " + rn.jumpIn + " "; !strings.Contains(office.Log(), want) {
		t.Errorf("the office's sshd did not log %q (a login through the jump host):\n%s", want, office.Log())
	}
	if t.Failed() {
		t.FailNow()
	}

	// ProxyCommand: ssh -W through the jump host carries the connection.
	put(t, filepath.Join(officeDir, "messor", "outbox", "jump"), tree{"via-pc.txt": []byte("through ssh -W\n")}, old)
	put(t, filepath.Join(officeDir, "messor", "outbox", "weird"), tree{"for-weird.txt": []byte("never delivered by another way\n")}, old)
	hosts("office-pc")
	r = c.run(t, "pickup", "--no-mdns")
	wantCode(t, r, 0)
	wantOutput(t, r, "pickup: office-pc: picked up 2 file(s)")

	// A ProxyCommand that cannot run is a failure, and says so; a host
	// whose config says RemoteCommand is refused (exit 2), as a pickup
	// host and as a destination, and the others still served.
	hosts("office-badpc")
	r = c.run(t, "pickup", "--no-mdns")
	wantCode(t, r, 1)
	wantOutput(t, r, "office-badpc", "ProxyCommand", "/nonexistent/proxy")
	hosts("weird", "jump")
	r = c.run(t, "pickup", "--no-mdns")
	wantCode(t, r, 2)
	wantOutput(t, r, "host weird", "RemoteCommand", "pickup: jump:")
	hosts("jump")
	r = c.run(t, "dropoff", "--no-mdns")
	wantCode(t, r, 2)
	wantOutput(t, r, "host weird", "RemoteCommand")
	if strings.Contains(r.output(), "dropoff: weird") {
		t.Errorf("the refused destination was visited:\n%s", r)
	}
}
