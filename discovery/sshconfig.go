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
	cfg, err := ssh_config.DecodeBytes(configLines(b, home))
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
	alias := strings.ToLower(name) // as OpenSSH matches Host patterns
	h := Host{Name: name, HostName: alias, Port: 22, Source: SourceHostsFile}
	if v := c.get(alias, "HostName"); v != "" {
		h.HostName = strings.ReplaceAll(v, "%h", alias)
	}
	if v := c.get(alias, "Port"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return h, fmt.Errorf("ssh config: host %s: bad Port %q", name, v)
		}
		h.Port = p
	}
	h.User = c.get(alias, "User")
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
	for _, f := range c.getAll(alias, "IdentityFile") {
		h.IdentityFiles = append(h.IdentityFiles, expand(f))
	}
	if len(h.IdentityFiles) == 0 {
		for _, f := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			h.IdentityFiles = append(h.IdentityFiles, filepath.Join(home, ".ssh", f))
		}
	}
	if v := c.get(alias, "UserKnownHostsFile"); v != "" {
		for _, f := range strings.Fields(v) {
			h.KnownHostsFiles = append(h.KnownHostsFiles, expand(f))
		}
	} else {
		h.KnownHostsFiles = []string{filepath.Join(home, ".ssh", "known_hosts"), filepath.Join(home, ".ssh", "known_hosts2")}
	}
	h.HostKeyAlias = c.get(alias, "HostKeyAlias")
	h.StrictHostKeyChecking = strings.ToLower(c.get(alias, "StrictHostKeyChecking"))
	if v := c.get(alias, "ConnectTimeout"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s < 0 {
			return h, fmt.Errorf("ssh config: host %s: bad ConnectTimeout %q", name, v)
		}
		h.ConnectTimeout = time.Duration(s) * time.Second
	}
	return h, nil
}

// configLines makes the parser read the user's ssh_config as OpenSSH reads
// it: the patterns of Host and Match host lines split on tabs as well as
// spaces (the parser splits only on spaces, and would read "Host
// home<TAB>nas" as one pattern) and in lower case (OpenSSH matches host
// names without regard to case; Resolve and Configures look up the
// lower-cased name); the files of an Include line under home (the parser
// would look under the account's home in the password database, which
// Configures does not). Files the config Includes are parsed as they are.
func configLines(b []byte, home string) []byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		rest := bytes.TrimLeft(l, " \t")
		end := bytes.IndexAny(rest, " \t=")
		if end < 0 {
			continue
		}
		lead := l[:len(l)-len(rest)+end] // indentation and keyword
		switch key := string(rest[:end]); {
		case strings.EqualFold(key, "host"), strings.EqualFold(key, "match"):
			lines[i] = slices.Concat(lead, bytes.ToLower(bytes.ReplaceAll(rest[end:], []byte("\t"), []byte(" "))))
		case strings.EqualFold(key, "include"):
			// Left alone if a path has a blank: the parser splits on spaces.
			paths := includePaths(string(rest[end:]), home)
			if len(paths) > 0 && !slices.ContainsFunc(paths, func(p string) bool { return strings.ContainsAny(p, " \t") }) {
				lines[i] = slices.Concat(lead, []byte(" "+strings.Join(paths, " ")))
			}
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

// includePaths returns the paths of an Include line's value (after the
// keyword) as OpenSSH reads them: "~/" is home, relative paths are under
// home/.ssh; globs are left to expand.
func includePaths(val, home string) []string {
	val, _, _ = strings.Cut(val, "#")
	var out []string
	for _, p := range strings.Fields(strings.TrimLeft(val, " \t=")) {
		switch {
		case strings.HasPrefix(p, "~/"):
			p = filepath.Join(home, p[2:])
		case !filepath.IsAbs(p):
			p = filepath.Join(home, ".ssh", p)
		}
		out = append(out, p)
	}
	return out
}
