package carrier

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/messor-sync/messor/discovery"
)

// UnknownHostKeyError: the host presented a key that no known_hosts file
// lists, and accept-new was not chosen.
type UnknownHostKeyError struct {
	Host        string // messor name
	Addr        string // name looked up in known_hosts
	Fingerprint string
	KnownHosts  string // the file a trusted key would go to
	// Configured: the host is one the user configured, so --accept-new
	// would pin its key.
	Configured bool
}

func (e *UnknownHostKeyError) Error() string {
	if !e.Configured {
		return fmt.Sprintf("host %s (%s): unknown host key %s; if that is the right key, trust it with `messor trust %s` (--accept-new is only for configured hosts)",
			e.Host, e.Addr, e.Fingerprint, e.Host)
	}
	return fmt.Sprintf("host %s (%s): unknown host key %s; if that is the right key, trust it with `messor trust %s` or run once with --accept-new (it will be added to %s)",
		e.Host, e.Addr, e.Fingerprint, e.Host, e.KnownHosts)
}

// ChangedHostKeyError: the host presented a key other than the one pinned
// for it. This is always refused.
type ChangedHostKeyError struct {
	Host        string
	Addr        string
	Fingerprint string // presented
	Want        []string
	File        string
	Line        int
}

func (e *ChangedHostKeyError) Error() string {
	return fmt.Sprintf("host %s (%s): HOST KEY CHANGED: it presented %s, but %s:%d pins another key; someone may be impersonating the host. If the host really got a new key, remove that line and trust the new one",
		e.Host, e.Addr, e.Fingerprint, e.File, e.Line)
}

var knownHostsMu sync.Mutex // serialises appends to known_hosts within a process

// HostKeyPolicy builds the host key check for h: its known_hosts files,
// plus accept-new (pin an unknown key on first contact) when acceptNew is
// set or ssh_config says StrictHostKeyChecking accept-new or no. A changed
// key is always refused. The acceptNew flag is ignored for a name nobody
// configured (discovery.SourceSSHConfig; ssh_config's own setting for it
// still applies, as in ssh). A host heard over mDNS never gets accept-new:
// first contact is for names the user configured, and a name heard on a
// LAN is anyone's; agents are pinned with `messor trust` (Pin).
func HostKeyPolicy(h discovery.Host, acceptNew bool) ssh.HostKeyCallback {
	return hostKeyPolicy(h, acceptNew, nil)
}

// PinNote is a host key pinned on first contact (accept-new).
type PinNote struct {
	Host        string // the messor name
	Fingerprint string // SHA256:...
	File        string // the known_hosts file it was added to
}

// hostKeyPolicy is HostKeyPolicy, telling onPin (if set) of each key it
// pins.
func hostKeyPolicy(h discovery.Host, acceptNew bool, onPin func(PinNote)) ssh.HostKeyCallback {
	// The flag is for configured hosts: a destination nobody configured is
	// named by whoever wrote the outbox, and resolved by the LAN's DNS.
	acceptNew = acceptNew && h.Source != discovery.SourceSSHConfig
	if h.StrictHostKeyChecking == "accept-new" || h.StrictHostKeyChecking == "no" {
		acceptNew = true
	}
	if h.Source == discovery.SourceMDNS {
		acceptNew = false
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		name := h.KnownHostsName()
		fp := ssh.FingerprintSHA256(key)
		var files []string
		for _, f := range h.KnownHostsFiles {
			if _, err := os.Stat(f); err == nil {
				files = append(files, f)
			}
		}
		if len(files) > 0 {
			cb, err := knownhosts.New(files...)
			if err != nil {
				return fmt.Errorf("host %s: known_hosts: %w", h.Name, err)
			}
			addr := name
			if _, _, err := net.SplitHostPort(name); err != nil {
				// A HostKeyAlias (or an agent's pinned name): knownhosts
				// wants host:port, and "name:22" is recorded as "name".
				addr = net.JoinHostPort(name, "22")
			}
			err = cb(addr, remote, key)
			var ke *knownhosts.KeyError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &ke) && len(ke.Want) > 0:
				return &ChangedHostKeyError{Host: h.Name, Addr: name, Fingerprint: fp, Want: fingerprints(ke.Want),
					File: ke.Want[0].Filename, Line: ke.Want[0].Line}
			case errors.As(err, &ke):
				// unknown: fall through
			default:
				return fmt.Errorf("host %s: known_hosts: %w", h.Name, err)
			}
		}
		target := ""
		if len(h.KnownHostsFiles) > 0 {
			target = h.KnownHostsFiles[0]
		}
		if !acceptNew || target == "" {
			return &UnknownHostKeyError{Host: h.Name, Addr: name, Fingerprint: fp, KnownHosts: target,
				Configured: h.Source != discovery.SourceMDNS && h.Source != discovery.SourceSSHConfig}
		}
		if err := AppendKnownHost(target, name, key); err != nil {
			return fmt.Errorf("host %s: pin key: %w", h.Name, err)
		}
		if onPin != nil {
			onPin(PinNote{Host: h.Name, Fingerprint: fp, File: target})
		}
		return nil
	}
}

// AppendKnownHost adds a known_hosts line for addr (host:port or alias).
func AppendKnownHost(file, addr string, key ssh.PublicKey) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fingerprints(ks []knownhosts.KnownKey) []string {
	var out []string
	for _, k := range ks {
		out = append(out, ssh.FingerprintSHA256(k.Key))
	}
	return out
}

// AgentPins reads the agents file (known_hosts format, one name per pinned
// agent), for discovery.FinderConfig.Pins. A missing file pins nothing.
func AgentPins(file string) (discovery.Pins, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return agentPins{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agents file: %w", err)
	}
	if !slices.ContainsFunc(bytes.Split(b, []byte("\n")), func(l []byte) bool {
		l = bytes.TrimSpace(l)
		return len(l) > 0 && l[0] != '#'
	}) {
		return agentPins{}, nil
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("agents file: %w", err)
	}
	probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		return nil, err
	}
	return agentPins{cb: cb, probe: probe}, nil
}

type agentPins struct {
	cb    ssh.HostKeyCallback // nil: nothing pinned
	probe ssh.PublicKey
}

func (p agentPins) Empty() bool { return p.cb == nil }

// Pinned asks the known_hosts check about a key pinned for no one: its
// KeyError lists the keys that are pinned for name.
func (p agentPins) Pinned(name string) bool {
	if p.cb == nil {
		return false
	}
	var ke *knownhosts.KeyError
	err := p.cb(net.JoinHostPort(name, "22"), &net.TCPAddr{}, p.probe)
	return err == nil || errors.As(err, &ke) && len(ke.Want) > 0
}

// HostKeyCheck is what `messor trust` learnt of a host's key.
type HostKeyCheck struct {
	Host        discovery.Host
	Key         ssh.PublicKey
	Fingerprint string
	// Pinned: the key is already in one of the host's known_hosts files.
	Pinned bool
}

// CheckHostKey connects to h far enough to see its key (no login) and
// checks it against h's known_hosts files. A key other than want (if set),
// other than the one an mDNS advert claimed, or other than the pinned one,
// is an error.
func CheckHostKey(ctx context.Context, h discovery.Host, timeout time.Duration, want string) (*HostKeyCheck, error) {
	key, remote, err := FetchHostKey(ctx, h, timeout)
	if err != nil {
		return nil, err
	}
	k := &HostKeyCheck{Host: h, Key: key, Fingerprint: ssh.FingerprintSHA256(key)}
	if want != "" && want != k.Fingerprint {
		return k, fmt.Errorf("host %s presents %s, not %s: %w", h.Name, k.Fingerprint, want, ErrNotTrusted)
	}
	if h.Fingerprint != "" && h.Fingerprint != k.Fingerprint {
		return k, fmt.Errorf("host %s: advertised fingerprint %s but presents %s: refusing", h.Name, h.Fingerprint, k.Fingerprint)
	}
	err = HostKeyPolicy(h, false)(h.KnownHostsName(), remote, key)
	var uk *UnknownHostKeyError
	switch {
	case err == nil:
		k.Pinned = true
	case !errors.As(err, &uk):
		return k, err
	}
	return k, nil
}

// ErrNotTrusted: the user did not confirm the key.
var ErrNotTrusted = errors.New("not trusted")

// Pin records k's key in the host's first known_hosts file (for an agent,
// the agents file) and returns that file.
func (k *HostKeyCheck) Pin() (file string, err error) {
	if len(k.Host.KnownHostsFiles) == 0 {
		return "", fmt.Errorf("host %s: no known_hosts file to pin its key in", k.Host.Name)
	}
	file = k.Host.KnownHostsFiles[0]
	if err := AppendKnownHost(file, k.Host.KnownHostsName(), k.Key); err != nil {
		return "", fmt.Errorf("host %s: pin key in %s: %w", k.Host.Name, file, err)
	}
	return file, nil
}
