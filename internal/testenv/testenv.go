// Package testenv builds the files a test needs around real hosts: a
// carrier's HOME (key, ~/.ssh/config, known_hosts, hosts file), a host's
// login directory with the messor layout, and trees of files to compare.
package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
	"golang.org/x/crypto/ssh"
)

// Home is a carrier's HOME directory.
type Home struct {
	Dir    string     // the directory to use as $HOME
	Key    ssh.Signer // the carrier's key, also in Dir/.ssh/id_ed25519
	KeyPEM []byte     // the OpenSSH private key file for Key

	t testing.TB
}

// NewHome returns a fresh HOME in a temporary directory holding a new
// ed25519 identity, and an empty ~/.ssh/config and known_hosts.
func NewHome(t testing.TB) *Home {
	t.Helper()
	h := &Home{Dir: t.TempDir(), t: t}
	h.Key, h.KeyPEM = sshdtest.NewKey(t)
	if err := os.Mkdir(h.sshPath(""), 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	h.write(h.identity(), h.KeyPEM)
	h.write(h.sshPath("config"), nil)
	h.write(h.knownHosts(), nil)
	return h
}

func (h *Home) sshPath(name string) string { return filepath.Join(h.Dir, ".ssh", name) }
func (h *Home) identity() string           { return h.sshPath("id_ed25519") }
func (h *Home) knownHosts() string         { return h.sshPath("known_hosts") }

// AddHost adds a ~/.ssh/config entry for s under name, logging in as root
// with h.Key. If trusted, s's host key is added to known_hosts. The caller
// must still authorise h.Key on s (sshdtest.Options.AuthorizedKeys).
func (h *Home) AddHost(name string, s *sshdtest.Server, trusted bool) {
	h.t.Helper()
	h.AddHostAddr(name, s.Host, s.Port)
	if trusted {
		h.appendFile(h.knownHosts(), s.KnownHostsLine()+"\n")
	}
}

// AddHostAddr adds a ~/.ssh/config entry for name at host:port, which need
// not be reachable.
func (h *Home) AddHostAddr(name, host string, port int) {
	h.t.Helper()
	h.appendFile(h.sshPath("config"), fmt.Sprintf(
		"Host %s\n HostName %s\n Port %d\n User root\n IdentityFile %s\n UserKnownHostsFile %s\n",
		name, host, port, h.identity(), h.knownHosts()))
}

// WriteHostsFile replaces ~/.messor_pickup_hosts with names, one a line.
func (h *Home) WriteHostsFile(names ...string) {
	h.t.Helper()
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n + "\n")
	}
	h.write(filepath.Join(h.Dir, ".messor_pickup_hosts"), []byte(b.String()))
}

func (h *Home) write(path string, data []byte) {
	h.t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		h.t.Fatalf("testenv: %v", err)
	}
}

func (h *Home) appendFile(path, text string) {
	h.t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		_, err = f.WriteString(text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		h.t.Fatalf("testenv: %v", err)
	}
}

// NewHostDir returns a fresh login directory for a host, holding empty
// messor/outbox and messor/inbox directories.
func NewHostDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{protocol.Outbox, protocol.Inbox} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(d)), 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return dir
}

// WriteTree writes files under dir, keyed by slash-separated paths relative
// to dir, creating parent directories as needed.
func WriteTree(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
}

// ReadTree returns every regular file under dir, hidden ones included, keyed
// by slash-separated path relative to dir. A missing dir yields an empty map.
func ReadTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: reading tree %s: %v", dir, err)
	}
	return files
}
