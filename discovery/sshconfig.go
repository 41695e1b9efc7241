package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// SSHConfig resolves host names the way OpenSSH's client does, from the
// user's ~/.ssh/config (parsed by github.com/kevinburke/ssh_config). The
// zero value (or nil) resolves every name to itself with OpenSSH defaults.
type SSHConfig struct {
	home string
	cfg  *ssh_config.Config
}

// LoadSSHConfig reads home/.ssh/config. A missing file is not an error.
func LoadSSHConfig(home string) (*SSHConfig, error) {
	c := &SSHConfig{home: home}
	p := filepath.Join(home, ".ssh", "config")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ssh config: %w", err)
	}
	cfg, err := ssh_config.DecodeBytes(hostTabs(b))
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", p, err)
	}
	c.cfg = cfg
	return c, nil
}

func (c *SSHConfig) get(alias, key string) string {
	if c == nil || c.cfg == nil {
		return ""
	}
	v, err := c.cfg.Get(alias, key)
	if err != nil {
		return ""
	}
	return v
}

func (c *SSHConfig) getAll(alias, key string) []string {
	if c == nil || c.cfg == nil {
		return nil
	}
	v, err := c.cfg.GetAll(alias, key)
	if err != nil {
		return nil
	}
	return v
}

// Resolve returns the Host for a messor name: HostName, Port, User,
// IdentityFile, UserKnownHostsFile, HostKeyAlias, StrictHostKeyChecking and
// ConnectTimeout from ssh_config, OpenSSH's defaults otherwise. "~" and
// %d/%u/%h/%n/%% in paths are expanded.
func (c *SSHConfig) Resolve(name string) (Host, error) {
	home := ""
	if c != nil {
		home = c.home
	}
	h := Host{Name: name, HostName: name, Port: 22, Source: SourceHostsFile}
	if v := c.get(name, "HostName"); v != "" {
		h.HostName = strings.ReplaceAll(v, "%h", name)
	}
	if v := c.get(name, "Port"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return h, fmt.Errorf("ssh config: host %s: bad Port %q", name, v)
		}
		h.Port = p
	}
	h.User = c.get(name, "User")
	if h.User == "" {
		if u, err := user.Current(); err == nil {
			h.User = u.Username
		} else {
			h.User = os.Getenv("USER")
		}
	}
	expand := func(p string) string {
		r := strings.NewReplacer("%d", home, "%u", h.User, "%h", h.HostName, "%n", name, "%r", h.User, "%%", "%")
		p = r.Replace(p)
		if p == "~" {
			return home
		}
		if strings.HasPrefix(p, "~/") {
			return filepath.Join(home, p[2:])
		}
		return p
	}
	for _, f := range c.getAll(name, "IdentityFile") {
		h.IdentityFiles = append(h.IdentityFiles, expand(f))
	}
	if len(h.IdentityFiles) == 0 {
		for _, f := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			h.IdentityFiles = append(h.IdentityFiles, filepath.Join(home, ".ssh", f))
		}
	}
	if v := c.get(name, "UserKnownHostsFile"); v != "" {
		for _, f := range strings.Fields(v) {
			h.KnownHostsFiles = append(h.KnownHostsFiles, expand(f))
		}
	} else {
		h.KnownHostsFiles = []string{filepath.Join(home, ".ssh", "known_hosts"), filepath.Join(home, ".ssh", "known_hosts2")}
	}
	h.HostKeyAlias = c.get(name, "HostKeyAlias")
	h.StrictHostKeyChecking = strings.ToLower(c.get(name, "StrictHostKeyChecking"))
	if v := c.get(name, "ConnectTimeout"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s < 0 {
			return h, fmt.Errorf("ssh config: host %s: bad ConnectTimeout %q", name, v)
		}
		h.ConnectTimeout = time.Duration(s) * time.Second
	}
	return h, nil
}

// hostTabs writes the tabs between a Host line's patterns as spaces:
// OpenSSH splits patterns on any blank, the parser only on spaces, and would
// read "Host home<TAB>nas" as one pattern that configures neither name.
// (Files the config Includes are parsed as they are.)
func hostTabs(b []byte) []byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		rest := bytes.TrimLeft(l, " \t")
		end := bytes.IndexAny(rest, " \t=")
		if end < 0 || !strings.EqualFold(string(rest[:end]), "host") {
			continue
		}
		lines[i] = slices.Concat(l[:len(l)-len(rest)+end], bytes.ReplaceAll(rest[end:], []byte("\t"), []byte(" ")))
	}
	return bytes.Join(lines, []byte("\n"))
}
