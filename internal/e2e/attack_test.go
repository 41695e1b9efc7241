package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/netns"
)

// TestAcceptNewOnlyConfigured: a destination nobody configured (its name
// comes from an outbox directory, resolved only through a wildcard block
// of ~/.ssh/config) never gets --accept-new: its unknown key is refused,
// exit status 1, nothing pinned or delivered, until `messor trust` pins it.
//
//	node 0: OpenSSH sshd "office" (port 2223, key known) and one whose key is unknown (2224)
//	node 1: the carrier
func TestAcceptNewOnlyConfigured(t *testing.T) {
	requireRootAndIP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	nt := netns.New(t, 2)
	base := t.TempDir()
	officeDir, atticDir := filepath.Join(base, "office"), filepath.Join(base, "attic")
	c := &carrierEnv{ctx: ctx, nt: nt, node: 1, home: filepath.Join(base, "carrier"), hosts: filepath.Join(base, "carrier-hosts")}
	authorized := newCarrierKey(t, c.home)
	writeFile(t, c.hosts, []byte("office\n"), 0o644)
	officeKey := startNSSSHD(ctx, t, nt, 0, 2223, officeDir, authorized)
	atticKey := startNSSSHD(ctx, t, nt, 0, 2224, atticDir, authorized)
	writeFile(t, filepath.Join(c.home, ".ssh", "config"), fmt.Appendf(nil,
		"Host office\n  HostName %[1]s\n  Port 2223\n  User root\n\nHost att*\n  HostName %[1]s\n  Port 2224\n  User root\n\nHost *\n  ConnectTimeout 5\n",
		nt.IP(0)), 0o600)
	knownHosts := filepath.Join(c.home, ".ssh", "known_hosts")
	known := fmt.Appendf(nil, "[%s]:2223 %s", nt.IP(0), ssh.MarshalAuthorizedKey(officeKey))
	writeFile(t, knownHosts, known, 0o600)

	letter := tree{"letter.txt": []byte("for the attic\n")}
	put(t, filepath.Join(officeDir, "messor", "outbox", "attic"), letter, time.Now().Add(-time.Hour))
	wantCode(t, c.run(t, "pickup", "--no-mdns"), 0)

	r := c.run(t, "dropoff", "--no-mdns", "--accept-new")
	wantCode(t, r, 1)
	wantOutput(t, r, "dropoff: attic:", "unknown host key", ssh.FingerprintSHA256(atticKey), "messor trust attic")
	if b, _ := os.ReadFile(knownHosts); string(b) != string(known) {
		t.Errorf("--accept-new pinned a key for a destination nobody configured; %s holds\n%s", knownHosts, b)
	}
	wantTree(t, "attic's inbox before trust", filepath.Join(atticDir, "messor", "inbox", "office"), nil)

	r = c.run(t, "trust", "attic", "--fingerprint", ssh.FingerprintSHA256(atticKey), "--no-mdns")
	wantCode(t, r, 0)
	r = c.run(t, "dropoff", "--no-mdns")
	wantCode(t, r, 0)
	wantOutput(t, r, "dropoff: attic: delivered 1 file(s)")
	wantTree(t, "attic's inbox after trust", filepath.Join(atticDir, "messor", "inbox", "office"), letter)
}
