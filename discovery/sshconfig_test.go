package discovery

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/messor-sync/messor/protocol"
)

func protocolCheck(h string) error { return protocol.CheckHostName(h) }

func TestResolve(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	cfg := `Host nas
  HostName 192.168.1.5
  Port 2222
  User alice
  IdentityFile ~/.ssh/nas_key
  UserKnownHostsFile ~/.ssh/kh_nas
  StrictHostKeyChecking accept-new
  ConnectTimeout 3

Host *
  User bob
`
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(cfg), 0o600)
	c, err := LoadSSHConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Resolve("nas")
	if err != nil {
		t.Fatal(err)
	}
	if h.HostName != "192.168.1.5" || h.Port != 2222 || h.User != "alice" || h.Addr() != "192.168.1.5:2222" ||
		h.IdentityFiles[0] != filepath.Join(home, ".ssh", "nas_key") || h.KnownHostsFiles[0] != filepath.Join(home, ".ssh", "kh_nas") ||
		h.StrictHostKeyChecking != "accept-new" || h.ConnectTimeout != 3*time.Second {
		t.Errorf("nas resolved to %+v", h)
	}
	o, _ := c.Resolve("other")
	if o.HostName != "other" || o.Port != 22 || o.User != "bob" || o.KnownHostsFiles[0] != filepath.Join(home, ".ssh", "known_hosts") {
		t.Errorf("other resolved to %+v", o)
	}
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Host bad\n Port nope\n"), 0o600)
	c, _ = LoadSSHConfig(home)
	if _, err := c.Resolve("bad"); err == nil {
		t.Error("bad port accepted")
	}
}
