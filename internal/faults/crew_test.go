package faults

import (
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/testenv"
)

// newCrew starts one host per name (with start) and n carriers, each with a
// HOME, key and buffer of its own: every carrier's key is authorized on
// every host and every host's key is trusted by every carrier. The carriers
// share one World, whose Buffer is the first carrier's and whose Others are
// the rest.
func newCrew(t *testing.T, start conformance.StartFunc, n int, names ...string) []*env {
	t.Helper()
	homes := make([]*testenv.Home, n)
	var keys []ssh.PublicKey
	for i := range homes {
		homes[i] = testenv.NewHome(t)
		keys = append(keys, homes[i].Key.PublicKey())
	}
	dirs, hosts := map[string]string{}, map[string]conformance.Host{}
	for _, name := range names {
		dir := testenv.NewHostDir(t)
		dirs[name], hosts[name] = dir, start(t, dir, keys)
	}
	crew := make([]*env, n)
	for i, home := range homes {
		ce := &conformance.Env{T: t, Home: home, Start: start, Dirs: dirs, Hosts: hosts,
			Buf: filepath.Join(home.Dir, "messor", "buffer")}
		for _, name := range names {
			addr, port := hosts[name].Addr()
			home.AddHostAddr(name, addr, port)
			ce.Trust(hosts[name])
		}
		home.WriteHostsFile(names...)
		crew[i] = &env{Env: ce}
	}
	w := NewWorld(dirs, crew[0].Buf)
	for i, e := range crew {
		e.world = w
		if i > 0 {
			w.Others = append(w.Others, e.Buf)
		}
	}
	return crew
}

// sshdHosts starts stock OpenSSH sshd hosts (with exec, so they hash).
func sshdHosts(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
	requireRoot(t)
	return conformance.SSHD(false)(t, dir, keys)
}

// sftpOnlyHosts starts stock sshd hosts that run no commands (nothing but
// SFTP): a visit starts no shell, so it costs half the time.
func sftpOnlyHosts(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
	requireRoot(t)
	return conformance.SSHD(true)(t, dir, keys)
}
