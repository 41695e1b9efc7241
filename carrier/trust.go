package carrier

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

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
}

func (e *UnknownHostKeyError) Error() string {
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
// key is always refused.
func HostKeyPolicy(h discovery.Host, acceptNew bool) ssh.HostKeyCallback {
	if h.StrictHostKeyChecking == "accept-new" || h.StrictHostKeyChecking == "no" {
		acceptNew = true
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
			return &UnknownHostKeyError{Host: h.Name, Addr: name, Fingerprint: fp, KnownHosts: target}
		}
		if err := AppendKnownHost(target, name, key); err != nil {
			return fmt.Errorf("host %s: pin key: %w", h.Name, err)
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
