package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/netns"
)

// TestMDNSPrecedence is the precedence rule and the exit status, end to end,
// with the real binary in four namespaces on one bridge:
//
//	node 0: real OpenSSH sshd for "home" (port 2222) and "office" (2223)
//	node 1: an impostor `messor agent` advertising the name "home"
//	node 2: the carrier
//	node 3: an agent "stranger" that lets nobody log in
//
// The carrier lists "office" in its hosts file; "home" is only a Host block
// in ~/.ssh/config, its key pinned in ~/.ssh/known_hosts; known_agents pins
// one agent, "elsewhere", that is never on this LAN.
func TestMDNSPrecedence(t *testing.T) {
	requireRootAndIP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	nt := netns.New(t, 4)
	base := t.TempDir()
	homeDir := filepath.Join(base, "home")
	officeDir := filepath.Join(base, "office")
	c := &carrierEnv{ctx: ctx, nt: nt, node: 2, home: filepath.Join(base, "carrier"), hosts: filepath.Join(base, "carrier-hosts")}
	authorized := newCarrierKey(t, c.home)
	writeFile(t, c.hosts, []byte("office\n"), 0o644)
	knownAgents := filepath.Join(c.home, ".config", "messor", "known_agents")
	pins := "elsewhere ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
	writeFile(t, knownAgents, []byte(pins), 0o600)

	homeKey := startNSSSHD(ctx, t, nt, 0, 2222, homeDir, authorized)
	officeKey := startNSSSHD(ctx, t, nt, 0, 2223, officeDir, authorized)
	writeFile(t, filepath.Join(c.home, ".ssh", "config"), fmt.Appendf(nil,
		"Host home\n  HostName %[1]s\n  Port 2222\n  User root\n\nHost office\n  HostName %[1]s\n  Port 2223\n  User root\n\nHost *\n  ConnectTimeout 5\n",
		nt.IP(0)), 0o600)
	writeFile(t, filepath.Join(c.home, ".ssh", "known_hosts"), fmt.Appendf(nil, "[%[1]s]:2222 %[2]s[%[1]s]:2223 %[3]s",
		nt.IP(0), ssh.MarshalAuthorizedKey(homeKey), ssh.MarshalAuthorizedKey(officeKey)), 0o600)

	writeFile(t, filepath.Join(base, "impostor", ".ssh", "authorized_keys"), authorized, 0o600)
	impostor := startAgent(ctx, t, nt, 1, "impostor home", "home", filepath.Join(base, "impostor"))
	writeFile(t, filepath.Join(base, "stranger", ".ssh", "authorized_keys"), nil, 0o600)
	stranger := startAgent(ctx, t, nt, 3, "stranger", "stranger", filepath.Join(base, "stranger"))

	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	realInbox := filepath.Join(homeDir, "messor", "inbox", "office")
	wantPins := func(step, want string) {
		t.Helper()
		if b, _ := os.ReadFile(knownAgents); string(b) != want {
			t.Errorf("%s: %s holds\n%s\nwant\n%s", step, knownAgents, b, want)
		}
	}

	// The real binary failed this with "dropoff: home: agent on the LAN,
	// skipped: host home (home): unknown host key", exit 0; with
	// --accept-new it pinned the impostor and delivered to it.
	t.Run("configured name beats an advert", func(t *testing.T) {
		for i, flags := range [][]string{nil, {"--accept-new"}} {
			name := fmt.Sprintf("payroll-%d.xlsx", i)
			payroll := tree{name: []byte(fmt.Sprintf("salaries, run %d\n", i))}
			put(t, filepath.Join(officeDir, "messor", "outbox", "home"), payroll, old)
			r := c.run(t, append([]string{"pickup", "--mdns-timeout", "3s"}, flags...)...)
			wantCode(t, r, 0)
			// pickup listens for the pinned agent, and logs the advert it ignores.
			wantOutput(t, r, "pickup: office: picked up 1 file(s)", "ignoring advert for a configured host", "host=home", impostor.fingerprint)

			r = c.run(t, append([]string{"dropoff", "--mdns-timeout", "3s"}, flags...)...)
			wantCode(t, r, 0)
			wantOutput(t, r, "dropoff: home: delivered 1 file(s)")
			if got := read(t, realInbox); !bytes.Equal(got[name], payroll[name]) {
				t.Errorf("dropoff %v: the real home's inbox holds %s, want %s", flags, describe(got), name)
			}
			wantTree(t, "the impostor's inbox", impostor.inbox("office"), nil)
			wantPins(fmt.Sprintf("after dropoff %v", flags), pins)
			if t.Failed() {
				t.FailNow()
			}
		}
	})

	t.Run("trust prefers the configured host", func(t *testing.T) {
		r := c.run(t, "trust", "home", "--fingerprint", impostor.fingerprint, "--mdns-timeout", "3s")
		wantCode(t, r, 1)
		wantOutput(t, r, ssh.FingerprintSHA256(homeKey), "not trusted")
		r = c.run(t, "trust", "home", "--yes", "--mdns-timeout", "3s")
		wantCode(t, r, 0)
		wantOutput(t, r, ssh.FingerprintSHA256(homeKey), "already trusted")
		wantPins("after trust home", pins)
	})

	// With nothing pinned and every host configured, no run waits for
	// mDNS: a 10-minute browse window must not hold them (each run is
	// killed, and the test fails, after 40s).
	t.Run("no idle wait for mDNS", func(t *testing.T) {
		if err := os.Rename(knownAgents, knownAgents+".aside"); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(knownAgents+".aside", knownAgents)
		put(t, filepath.Join(officeDir, "messor", "outbox", "home"), tree{"quick.txt": []byte("no waiting\n")}, old)
		r := c.run(t, "sync", "--mdns-timeout", "10m")
		wantCode(t, r, 0)
		wantOutput(t, r, "pickup: office: picked up 1 file(s)", "dropoff: home: delivered 1 file(s)")
	})

	// An agent nobody configured or pinned, with files waiting for it, is
	// refused (exit 1) and never pinned, --accept-new or not.
	put(t, filepath.Join(officeDir, "messor", "outbox", "stranger"), tree{"letter.txt": []byte("for the stranger\n")}, old)
	t.Run("unpinned agent with files waiting", func(t *testing.T) {
		r := c.run(t, "pickup", "--mdns-timeout", "3s")
		wantCode(t, r, 0)
		for _, flags := range [][]string{nil, {"--accept-new"}} {
			r = c.run(t, append([]string{"dropoff", "--mdns-timeout", "3s"}, flags...)...)
			wantCode(t, r, 1)
			wantOutput(t, r, "dropoff: stranger: agent stranger on the LAN", stranger.fingerprint, "messor trust stranger")
			wantPins(fmt.Sprintf("after dropoff %v to an unpinned agent", flags), pins)
		}
	})

	t.Run("pinned agent refuses the login", func(t *testing.T) {
		r := c.run(t, "trust", "stranger", "--fingerprint", stranger.fingerprint, "--mdns-timeout", "3s")
		wantCode(t, r, 0)
		r = c.run(t, "dropoff", "--mdns-timeout", "3s")
		wantCode(t, r, 1)
		wantOutput(t, r, "dropoff: stranger:")
	})

	t.Run("pinned agent out of range", func(t *testing.T) {
		stranger.stop(t)
		r := c.run(t, "dropoff", "--mdns-timeout", "3s")
		wantCode(t, r, 0)
		wantOutput(t, r, "dropoff: stranger: skipped, not reachable")
	})
}

// startNSSSHD runs OpenSSH sshd in node's namespace on 0.0.0.0:port, its
// SFTP sessions starting in loginDir, root allowed in with authorized. It
// returns the host key once sshd says it listens; sshd's log is shown when
// the test fails.
func startNSSSHD(ctx context.Context, t *testing.T, nt *netns.Net, node, port int, loginDir string, authorized []byte) ssh.PublicKey {
	t.Helper()
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		t.Fatalf("OpenSSH sshd not found at %s: install openssh-server: %v", sshd, err)
	}
	if err := os.MkdirAll(filepath.Join(loginDir, "messor"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key := newKeyFile(t, filepath.Join(dir, "host_key"), "")
	writeFile(t, filepath.Join(dir, "authorized_keys"), authorized, 0o600)
	cfg := strings.Join([]string{
		"ListenAddress 0.0.0.0", fmt.Sprintf("Port %d", port),
		"HostKey " + filepath.Join(dir, "host_key"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
		"PermitRootLogin yes", "LogLevel VERBOSE",
		"Subsystem sftp internal-sftp -d " + loginDir, "",
	}, "\n")
	writeFile(t, filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nt.NS(node), sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	var log syncBuf
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("sshd on node %d port %d:\n%s", node, port, log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(log.String(), "Server listening on 0.0.0.0 port") {
		if isClosed(done) || time.Now().After(deadline) {
			t.Fatalf("sshd on node %d port %d did not start:\n%s", node, port, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return key
}
