package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"net"
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
// user's ~/.ssh/config and then the system's /etc/ssh/ssh_config (parsed by
// github.com/kevinburke/ssh_config): the first value found wins. The zero
// value (or nil) resolves every name to itself with OpenSSH defaults.
type SSHConfig struct {
	home    string
	dir     string // where relative Include paths are: ~/.ssh, /etc/ssh
	cfg     *ssh_config.Config
	matches []*matchBlock // the file's Match lines (see sshmatch.go)
	sys     *SSHConfig    // the system's file, read after this one
}

// systemConfig is OpenSSH's system-wide client configuration.
var systemConfig = "/etc/ssh/ssh_config"

// LoadSSHConfig reads home/.ssh/config and systemConfig. A missing file is
// not an error. A system file messor cannot read is skipped: Fedora's, for
// one, Includes a file with "Match final all", which the parser refuses.
func LoadSSHConfig(home string) (*SSHConfig, error) {
	c, err := loadConfigFile(home, filepath.Join(home, ".ssh", "config"), filepath.Join(home, ".ssh"))
	if err != nil {
		return nil, err
	}
	if sys, err := loadConfigFile(home, systemConfig, filepath.Dir(systemConfig)); err == nil {
		c.sys = sys
	}
	return c, nil
}

// loadConfigFile reads one config file, p, whose relative Include paths
// are under dir.
func loadConfigFile(home, p, dir string) (*SSHConfig, error) {
	c := &SSHConfig{home: home, dir: dir}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ssh config: %w", err)
	}
	b, c.matches, err = rewriteMatches(b, p)
	if err != nil {
		return nil, fmt.Errorf("ssh config: %w", err)
	}
	if err := c.checkIncluded(b, p, home, 0); err != nil {
		return nil, fmt.Errorf("ssh config: %w", err)
	}
	cfg, err := ssh_config.DecodeBytes(configLines(b, home, dir))
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", p, err)
	}
	c.cfg = cfg
	return c, nil
}

// userOnly are the keywords read from the user's file only: the system's
// file may route or refuse a host, never trust more host keys.
var userOnly = map[string]bool{"stricthostkeychecking": true, "userknownhostsfile": true}

func (c *SSHConfig) get(alias, key string) string {
	if c == nil {
		return ""
	}
	if c.cfg != nil {
		if v, err := c.cfg.Get(alias, key); err == nil && v != "" {
			return v
		}
	}
	if userOnly[strings.ToLower(key)] {
		return ""
	}
	return c.sys.get(alias, key)
}

func (c *SSHConfig) getAll(alias, key string) []string {
	if c == nil {
		return nil
	}
	var v []string
	if c.cfg != nil {
		v, _ = c.cfg.GetAll(alias, key)
	}
	return append(v, c.sys.getAll(alias, key)...)
}

// Resolve returns the Host for a messor name: HostName, Port, User,
// IdentityFile, UserKnownHostsFile, HostKeyAlias, StrictHostKeyChecking,
// ConnectTimeout and the route (ProxyJump or ProxyCommand) from
// ssh_config, OpenSSH's defaults otherwise. "~" and %d/%u/%h/%n/%% in paths
// are expanded. A host for which ssh_config sets something that changes
// where or how ssh connects and that messor does not implement is refused
// with an *UnsupportedOptionError.
func (c *SSHConfig) Resolve(name string) (Host, error) {
	return c.resolve(name, nil)
}

// maxJumpDepth bounds how many hosts deep a route may nest.
const maxJumpDepth = 8

// resolve is Resolve for a host reached on the way to the hosts in via.
func (c *SSHConfig) resolve(name string, via []string) (Host, error) {
	h, err := c.resolveBase(name)
	if err != nil {
		return h, err
	}
	if err := c.checkRefused(name); err != nil {
		return h, err
	}
	if err := c.checkMatches(name, h.HostName); err != nil {
		return h, err
	}
	if err := c.sys.checkMatches(name, h.HostName); err != nil {
		return h, err
	}
	key, v, _, err := c.route(name, false)
	if err != nil {
		return h, err
	}
	switch {
	case strings.EqualFold(v, "none"):
	case key == "proxycommand":
		if err := checkTokens(name, v); err != nil {
			return h, err
		}
		h.ProxyCommand = v
	case key == "proxyjump":
		h.ProxyJump, err = c.resolveJumps(name, v, via)
		if err != nil {
			return h, err
		}
	}
	return h, nil
}

// route returns which of ProxyJump and ProxyCommand applies to name, and
// its value ("" when neither does), as OpenSSH's client decides (checked
// against ssh -G): the first ProxyCommand, even "none", settles it, unless
// a ProxyJump other than "none" came first; "ProxyJump none" ends the
// search for a ProxyJump only.
// jumpNone is whether a file read before said "ProxyJump none" (as it
// returns); the system's file is read after this one.
func (c *SSHConfig) route(name string, jumpNone bool) (key, value string, _ bool, err error) {
	if c == nil {
		return "", "", jumpNone, nil
	}
	if c.cfg == nil {
		return c.sys.route(name, jumpNone)
	}
	name = strings.ToLower(name) // as resolveBase looks it up
	// see takes one value; done says the route is settled.
	see := func(k, v string) (done bool) {
		switch {
		case k == "proxycommand":
			key, value = k, v
			return true
		case jumpNone:
		case strings.EqualFold(v, "none"):
			jumpNone = true
		default:
			key, value = k, v
			return true
		}
		return false
	}
	for _, host := range c.cfg.Hosts {
		if !host.Matches(name) {
			continue
		}
		for _, node := range host.Nodes {
			switch n := node.(type) {
			case *ssh_config.KV:
				k := strings.ToLower(n.Key)
				if k == "proxycommand" && strings.EqualFold(n.Value, "none") && (n.Comment != "" || strings.Contains(n.String(), `"`)) {
					return "", "", false, &UnsupportedOptionError{Host: name, Option: "ProxyCommand", Value: strings.TrimSpace(n.String()[len(n.Key):]),
						Fix: "OpenSSH reads the whole rest of the line, quotes and comment included, as a command to run; write \"ProxyCommand none\" alone for none"}
				}
				if (k == "proxyjump" || k == "proxycommand") && see(k, n.Value) {
					return key, value, jumpNone, nil
				}
			case *ssh_config.Include:
				j, p := n.Get(name, "ProxyJump"), n.Get(name, "ProxyCommand")
				if j != "" && p != "" && !strings.EqualFold(j, "none") && !jumpNone {
					return "", "", false, &UnsupportedOptionError{Host: name, Option: "ProxyJump and ProxyCommand", Value: "in one Included file",
						Fix: "messor cannot tell which comes first there; keep one of them for this host"}
				}
				if (j != "" && see("proxyjump", j)) || (p != "" && see("proxycommand", p)) {
					return key, value, jumpNone, nil
				}
			}
		}
	}
	return c.sys.route(name, jumpNone)
}

// resolveJumps resolves a ProxyJump value ("a,user@b:2222") for host name:
// each hop through ssh_config, its user and port from the value winning.
// Only the first hop keeps a route of its own (as with OpenSSH, which
// reaches each later hop through the one before).
func (c *SSHConfig) resolveJumps(name, value string, via []string) ([]Host, error) {
	via = append(via, name)
	if len(via) > maxJumpDepth {
		return nil, fmt.Errorf("ssh config: host %s: ProxyJump: more than %d hosts deep (%s)", name, maxJumpDepth, strings.Join(via, " → "))
	}
	var hops []Host
	for i, spec := range strings.Split(value, ",") {
		j, err := parseJump(spec)
		if err != nil {
			return nil, fmt.Errorf("ssh config: host %s: ProxyJump %q: %w", name, value, err)
		}
		if slices.ContainsFunc(via, func(v string) bool { return strings.EqualFold(v, j.host) }) {
			return nil, fmt.Errorf("ssh config: host %s: ProxyJump loops: %s → %s; leave the jump host out of the Host patterns that give it a ProxyJump (e.g. \"Host * !%s\")",
				name, strings.Join(via, " → "), j.host, j.host)
		}
		hop, err := c.resolve(j.host, via)
		if err != nil {
			return nil, fmt.Errorf("host %s → jump host %s: %w", name, j.host, err)
		}
		if i > 0 {
			hop.ProxyJump, hop.ProxyCommand = nil, ""
		}
		if j.user != "" {
			hop.User = j.user
		}
		if j.port != 0 {
			hop.Port = j.port
		}
		hops = append(hops, hop)
	}
	return hops, nil
}

// jumpSpec is one hop of a ProxyJump value: [ssh://][user@]host[:port].
type jumpSpec struct {
	user, host string
	port       int
}

func parseJump(s string) (jumpSpec, error) {
	var j jumpSpec
	s = strings.TrimPrefix(strings.TrimSpace(s), "ssh://")
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		j.user, s = s[:i], s[i+1:]
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return j, err
		}
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 {
			return j, fmt.Errorf("bad port %q", port)
		}
		j.port = p
	}
	if host == "" || strings.HasPrefix(host, "-") || strings.ContainsAny(host, " \t/") {
		return j, fmt.Errorf("bad host %q", host)
	}
	j.host = host
	return j, nil
}

// checkTokens refuses a ProxyCommand with a %-token other than those
// ProxyCommandLine expands.
func checkTokens(name, cmd string) error {
	for i := 0; i < len(cmd); i++ {
		if cmd[i] != '%' {
			continue
		}
		if i+1 == len(cmd) || !strings.ContainsRune("hprn%", rune(cmd[i+1])) {
			return &UnsupportedOptionError{Host: name, Option: "ProxyCommand", Value: cmd,
				Fix: "messor expands only %h, %p, %r, %n and %% in it"}
		}
		i++
	}
	return nil
}

// resolveBase is Resolve without the route and the refusals.
func (c *SSHConfig) resolveBase(name string) (Host, error) {
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
			if !strings.EqualFold(f, "none") { // none: no user known_hosts file
				h.KnownHostsFiles = append(h.KnownHostsFiles, expand(f))
			}
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
// lower-cased name); the relative files of an Include line under dir (the
// parser would look under the account's home in the password database,
// which Configures does not). Files the config Includes are parsed as they
// are.
func configLines(b []byte, home, dir string) []byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		rest := bytes.TrimLeft(l, " \t")
		end := bytes.IndexAny(rest, " \t=")
		if end < 0 {
			continue
		}
		lead := l[:len(l)-len(rest)+end] // indentation and keyword
		switch key := string(rest[:end]); {
		case strings.EqualFold(key, "host") && bytes.ContainsRune(rest[end:], '"'):
			lines[i] = slices.Concat(lead, []byte(" "+hostPatterns(string(rest[end:]))))
		case strings.EqualFold(key, "host"), strings.EqualFold(key, "match"):
			lines[i] = slices.Concat(lead, bytes.ToLower(bytes.ReplaceAll(rest[end:], []byte("\t"), []byte(" "))))
		case strings.EqualFold(key, "include"):
			// Left alone if a path has a blank (checkIncluded refuses it).
			paths := includePaths(string(rest[end:]), home, dir)
			if len(paths) > 0 && !slices.ContainsFunc(paths, func(p string) bool { return strings.ContainsAny(p, " \t") }) {
				lines[i] = slices.Concat(lead, []byte(" "+strings.Join(paths, " ")))
			}
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

// hostPatterns returns the patterns of a Host line's value (after the
// keyword) with double quotes as OpenSSH reads them (the parser would keep
// the quotes, and the block would apply to no host): unquoted, lower case,
// up to a word starting with '#'. A pattern with a blank in it matches no
// host name messor takes, and is left out; "!*" stands for a line left
// with none.
func hostPatterns(val string) string {
	words, err := splitArgs(strings.TrimLeft(val, " \t="))
	if err != nil {
		return "!*" // not reached: rewriteMatches refuses unbalanced quotes
	}
	var pats []string
	for _, w := range words {
		if strings.HasPrefix(w, "#") {
			break
		}
		if !strings.ContainsAny(w, " \t") {
			pats = append(pats, strings.ToLower(w))
		}
	}
	if len(pats) == 0 {
		return "!*"
	}
	return strings.Join(pats, " ")
}

// includePaths returns the paths of an Include line's value (after the
// keyword) as OpenSSH reads them: quotes removed, "~/" is home, relative
// paths are under dir (~/.ssh, or /etc/ssh for the system's file); globs
// are left to expand.
func includePaths(val, home, dir string) []string {
	val, _, _ = strings.Cut(val, "#")
	words, _ := splitArgs(strings.TrimLeft(val, " \t=")) // checkIncluded refused bad quotes
	var out []string
	for _, p := range words {
		switch {
		case strings.HasPrefix(p, "~/"):
			p = filepath.Join(home, p[2:])
		case !filepath.IsAbs(p):
			p = filepath.Join(dir, p)
		}
		out = append(out, p)
	}
	return out
}
