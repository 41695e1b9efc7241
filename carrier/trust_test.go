package carrier_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestHostKeyPolicyNeverAcceptsNewForMDNS: accept-new (the flag, or
// ssh_config's StrictHostKeyChecking) pins a configured host's key on first
// contact, but never the key of a host heard over mDNS.
func TestHostKeyPolicyNeverAcceptsNewForMDNS(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 2290}
	for _, strict := range []string{"", "accept-new", "no"} {
		agents := filepath.Join(t.TempDir(), "known_agents")
		h := discovery.Host{Name: "home", HostName: "10.0.0.9", Port: 2290, Source: discovery.SourceMDNS, Agent: true,
			KnownHostsFiles: []string{agents}, HostKeyAlias: "home", StrictHostKeyChecking: strict}
		err := carrier.HostKeyPolicy(h, true)(h.KnownHostsName(), remote, newHostKey(t))
		var uk *carrier.UnknownHostKeyError
		if !errors.As(err, &uk) {
			t.Errorf("StrictHostKeyChecking %q, --accept-new, host heard over mDNS: %v, want an UnknownHostKeyError", strict, err)
		}
		if b, err := os.ReadFile(agents); err == nil {
			t.Errorf("StrictHostKeyChecking %q: an mDNS host's key was pinned:\n%s", strict, b)
		}
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	h := discovery.Host{Name: "home", HostName: "10.0.0.9", Port: 22, Source: discovery.SourceHostsFile, KnownHostsFiles: []string{kh}}
	if err := carrier.HostKeyPolicy(h, true)(h.KnownHostsName(), remote, newHostKey(t)); err != nil {
		t.Errorf("--accept-new, configured host: %v", err)
	}
	if _, err := os.Stat(kh); err != nil {
		t.Errorf("--accept-new did not pin a configured host's key: %v", err)
	}
}

// TestHostKeyPolicyAcceptNewOnlyConfigured: the --accept-new flag never
// pins the key of a destination nobody configured (SourceSSHConfig), but
// ssh_config's own StrictHostKeyChecking for it is honoured, as by ssh.
func TestHostKeyPolicyAcceptNewOnlyConfigured(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 22}
	for _, strict := range []string{"", "accept-new"} {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		h := discovery.Host{Name: "attic", HostName: "attic", Port: 22, Source: discovery.SourceSSHConfig,
			KnownHostsFiles: []string{kh}, StrictHostKeyChecking: strict}
		err := carrier.HostKeyPolicy(h, true)(h.KnownHostsName(), remote, newHostKey(t))
		_, statErr := os.Stat(kh)
		var uk *carrier.UnknownHostKeyError
		switch {
		case strict == "" && (!errors.As(err, &uk) || uk.Configured || statErr == nil):
			t.Errorf("--accept-new, unconfigured destination: %v (known_hosts written: %v), want an UnknownHostKeyError and nothing pinned", err, statErr == nil)
		case strict != "" && (err != nil || statErr != nil):
			t.Errorf("StrictHostKeyChecking %s in ssh_config, unconfigured destination: %v, %v; want it pinned", strict, err, statErr)
		}
	}
}

// TestAgentPins: names with a key in the agents file are pinned, others
// and a missing or empty file pin nothing.
func TestAgentPins(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "known_agents")
	for _, content := range []string{"", "# nothing\n\n"} {
		if content != "" {
			os.WriteFile(file, []byte(content), 0o600)
		}
		pins, err := carrier.AgentPins(file)
		if err != nil || !pins.Empty() || pins.Pinned("alpha") {
			t.Errorf("agents file %q: pins %v, err %v; want none", content, pins, err)
		}
	}
	if err := carrier.AppendKnownHost(file, "alpha", newHostKey(t)); err != nil {
		t.Fatal(err)
	}
	pins, err := carrier.AgentPins(file)
	if err != nil || pins.Empty() || !pins.Pinned("alpha") || pins.Pinned("beta") || pins.Pinned("alph") {
		t.Errorf("alpha pinned: Empty %v, alpha %v, beta %v, err %v", pins.Empty(), pins.Pinned("alpha"), pins.Pinned("beta"), err)
	}
}
