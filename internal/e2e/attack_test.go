package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grandcat/zeroconf"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/netns"
	"github.com/messor-sync/messor/protocol"
)

// officeWorld is a carrier with its own key and HOME, whose hosts file
// lists "office": an OpenSSH sshd on port 2223 whose key the carrier knows.
type officeWorld struct {
	ctx        context.Context
	nt         *netns.Net
	base       string
	c          *carrierEnv
	authorized []byte // the carrier's authorized_keys line
	officeDir  string
	officeKey  ssh.PublicKey
}

// newOfficeWorld builds it on nodes namespaces, the carrier on node
// carrier and office's sshd on node office; hostBlocks are more Host
// blocks for the carrier's ~/.ssh/config ("%[1]s" is office's node's IP).
func newOfficeWorld(t *testing.T, nodes, carrier, office int, hostBlocks string) *officeWorld {
	t.Helper()
	requireRootAndIP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	w := &officeWorld{ctx: ctx, nt: netns.New(t, nodes), base: t.TempDir()}
	w.officeDir = filepath.Join(w.base, "office")
	w.c = &carrierEnv{ctx: ctx, nt: w.nt, node: carrier, home: filepath.Join(w.base, "carrier"), hosts: filepath.Join(w.base, "carrier-hosts")}
	w.authorized = newCarrierKey(t, w.c.home)
	writeFile(t, w.c.hosts, []byte("office\n"), 0o644)
	w.officeKey = startNSSSHD(ctx, t, w.nt, office, 2223, w.officeDir, w.authorized)
	writeFile(t, filepath.Join(w.c.home, ".ssh", "config"), fmt.Appendf(nil,
		"Host office\n  HostName %[1]s\n  Port 2223\n  User root\n\n"+hostBlocks+"Host *\n  ConnectTimeout 5\n", w.nt.IP(office)), 0o600)
	writeFile(t, w.knownHosts(), fmt.Appendf(nil, "[%s]:2223 %s", w.nt.IP(office), ssh.MarshalAuthorizedKey(w.officeKey)), 0o600)
	return w
}

func (w *officeWorld) knownHosts() string { return filepath.Join(w.c.home, ".ssh", "known_hosts") }

// outbox puts files in office's outbox for dest, an hour old.
func (w *officeWorld) outbox(t *testing.T, dest string, files tree) {
	put(t, filepath.Join(w.officeDir, "messor", "outbox", dest), files, time.Now().Add(-time.Hour))
}

// TestAcceptNewOnlyConfigured: a destination nobody configured (its name
// comes from an outbox directory, resolved only through a wildcard block
// of ~/.ssh/config) never gets --accept-new: its unknown key is refused,
// exit status 1, nothing pinned or delivered, until `messor trust` pins it.
//
//	node 0: OpenSSH sshd "office" (port 2223, key known) and one whose key is unknown (2224)
//	node 1: the carrier
func TestAcceptNewOnlyConfigured(t *testing.T) {
	w := newOfficeWorld(t, 2, 1, 0, "Host att*\n  HostName %[1]s\n  Port 2224\n  User root\n\n")
	c, knownHosts := w.c, w.knownHosts()
	atticDir := filepath.Join(w.base, "attic")
	atticKey := startNSSSHD(w.ctx, t, w.nt, 0, 2224, atticDir, w.authorized)
	known, err := os.ReadFile(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	letter := tree{"letter.txt": []byte("for the attic\n")}
	w.outbox(t, "attic", letter)
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

// forgeEnv makes the test binary a forger of mDNS adverts (forgeAdverts).
const forgeEnv = "MESSOR_E2E_FORGE"

// forgeAdverts advertises, until stdin closes, one agent per
// ";"-separated "NAME PORT FINGERPRINT IP[,IP...]" of spec: any name, any
// fingerprint in TXT, any addresses. It prints "ready" once registered.
func forgeAdverts(spec string) int {
	var servers []*zeroconf.Server
	for i, ad := range strings.Split(spec, ";") {
		f := strings.Fields(ad)
		port, err := strconv.Atoi(f[1])
		if len(f) != 4 || err != nil {
			fmt.Fprintf(os.Stderr, "forge: bad advert %q\n", ad)
			return 2
		}
		s, err := zeroconf.RegisterProxy(f[0], protocol.ServiceType, protocol.Domain, port, fmt.Sprintf("forged-%d", i),
			strings.Split(f[3], ","), []string{protocol.TxtVersion + "=" + protocol.Version, protocol.TxtFingerprint + "=" + f[2]}, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "forge:", err)
			return 1
		}
		servers = append(servers, s)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, s := range servers {
		s.Shutdown()
	}
	return 0
}

// forge runs forgeAdverts in node's namespace; stop withdraws the adverts.
func forge(t *testing.T, nt *netns.Net, node int, adverts ...string) (stop func()) {
	t.Helper()
	cmd := nt.Command(node, os.Args[0])
	cmd.Env = append(os.Environ(), forgeEnv+"="+strings.Join(adverts, ";"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("forger did not start: %q\n%s", line, stderr.String())
	}
	return func() { stdin.Close(); _ = cmd.Wait() }
}

// TestPinnedAgentImpostors: an agent pinned as "nas" has files waiting;
// a hostile LAN advertises "nas" too, with nas's fingerprint in TXT but its
// own key, or floods the name. Nothing reaches the impostor, and every run
// where nas cannot be told apart exits 1 with the files still carried.
//
//	node 0: the real agent "nas"
//	node 1: an impostor agent (advertised as "decoy") that would accept the carrier's files, and the forger
//	node 2: the carrier; node 3: OpenSSH sshd "office", whose outbox holds files for nas
func TestPinnedAgentImpostors(t *testing.T) {
	w := newOfficeWorld(t, 4, 2, 3, "")
	c, nt, officeDir, officeKey := w.c, w.nt, w.officeDir, w.officeKey
	for _, d := range []string{"nas", "impostor"} {
		writeFile(t, filepath.Join(w.base, d, ".ssh", "authorized_keys"), w.authorized, 0o600)
	}
	nas := startAgent(w.ctx, t, nt, 0, "nas", "nas", filepath.Join(w.base, "nas"))
	impostor := startAgent(w.ctx, t, nt, 1, "impostor", "decoy", filepath.Join(w.base, "impostor"))
	wantCode(t, c.run(t, "trust", "nas", "--fingerprint", nas.fingerprint, "--mdns-timeout", "3s"), 0)

	w.outbox(t, "nas", tree{"deeds.pdf": []byte("the deeds\n")})
	wantCode(t, c.run(t, "pickup", "--mdns-timeout", "3s"), 0)
	undelivered := func(step string, r result) {
		t.Helper()
		wantTree(t, step+": the impostor's inbox", impostor.inbox("office"), nil)
		wantTree(t, step+": nas's inbox", nas.inbox("office"), nil)
		if st := c.run(t, "status", "--json"); !strings.Contains(st.output(), "deeds.pdf") {
			t.Errorf("%s: the buffer no longer carries deeds.pdf:\n%s", step, st)
		}
	}
	fake := func(fp, ips string) string { return "nas 2290 " + fp + " " + ips }
	otherFP := func(i int) string { return fmt.Sprintf("SHA256:forged%dAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", i) }

	t.Run("second advert with the pinned fingerprint: contested", func(t *testing.T) {
		stop := forge(t, nt, 1, fake(nas.fingerprint, nt.IP(1)))
		defer stop()
		for _, verb := range []string{"dropoff", "pickup", "sync"} {
			r := c.run(t, verb, "--mdns-timeout", "3s")
			wantCode(t, r, 1)
			wantOutput(t, r, "nas:", `agents advertise the name "nas"`)
		}
		undelivered("contested", result{})
	})

	t.Run("flood of five: contested", func(t *testing.T) {
		var ads []string
		for i := range 5 {
			ads = append(ads, fake(otherFP(i), nt.IP(1)))
		}
		stop := forge(t, nt, 1, ads...)
		defer stop()
		r := c.run(t, "dropoff", "--mdns-timeout", "3s")
		wantCode(t, r, 1)
		wantOutput(t, r, `agents advertise the name "nas"`)
		undelivered("flooded", r)
	})

	// Claiming to be nas itself (its fingerprint, port and address, plus
	// the impostor's) merges with nas's advert: whichever was heard first
	// gives the address dialled, so the run either delivers to nas or is
	// refused at the key check, never reaching the impostor.
	t.Run("advert posing as nas on a second address", func(t *testing.T) {
		stop := forge(t, nt, 1, fake(nas.fingerprint, nt.IP(1)+","+nt.IP(0)))
		defer stop()
		r := c.run(t, "dropoff", "--mdns-timeout", "3s")
		wantTree(t, "the impostor's inbox", impostor.inbox("office"), nil)
		if r.code == 0 {
			wantOutput(t, r, "dropoff: nas: delivered 1 file(s)")
			if len(read(t, nas.inbox("office"))) != 1 {
				t.Errorf("exit 0, but nas's inbox holds %s", describe(read(t, nas.inbox("office"))))
			}
			w.outbox(t, "nas", tree{"deeds.pdf": []byte("the deeds, again\n")})
			wantCode(t, c.run(t, "pickup", "--no-mdns"), 0)
			return
		}
		wantCode(t, r, 1)
		wantOutput(t, r, "dropoff: nas:", "HOST KEY CHANGED")
		undelivered("posing", r)
	})

	t.Run("impostor alone with the pinned fingerprint in TXT", func(t *testing.T) {
		os.RemoveAll(nas.inbox("office"))
		nas.stop(t)
		stop := forge(t, nt, 1, fake(nas.fingerprint, nt.IP(1)))
		defer stop()
		r := c.run(t, "dropoff", "--mdns-timeout", "3s", "--accept-new")
		wantCode(t, r, 1)
		wantOutput(t, r, "dropoff: nas:", "HOST KEY CHANGED", impostor.fingerprint)
		undelivered("impostor alone", r)
		r = c.run(t, "trust", "nas", "--yes", "--mdns-timeout", "3s")
		wantCode(t, r, 1)
		wantOutput(t, r, impostor.fingerprint)
	})

	t.Run("advert pointing at a configured host", func(t *testing.T) {
		stop := forge(t, nt, 1, "nas 2223 "+ssh.FingerprintSHA256(officeKey)+" "+nt.IP(3))
		defer stop()
		r := c.run(t, "dropoff", "--mdns-timeout", "3s")
		wantCode(t, r, 1)
		wantOutput(t, r, "dropoff: nas:", "HOST KEY CHANGED", ssh.FingerprintSHA256(officeKey))
		wantTree(t, "office's inbox", filepath.Join(officeDir, "messor", "inbox"), nil)
		undelivered("advert at office", r)
	})
}
