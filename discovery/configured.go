package discovery

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/kevinburke/ssh_config"
)

// maxIncludeDepth bounds Include nesting, as OpenSSH does (16).
const maxIncludeDepth = 16

// Configures reports whether ~/.ssh/config names name in a Host line by a
// pattern without wildcards ("Host home", "Host home nas"), in the file or
// in a file it Includes. Such a name is the user's: it is dialled as
// configured and an mDNS advert under it is ignored. A block that matches
// name only through a wildcard ("Host *", "Host *.lan") gives it options
// but does not claim it, else "Host *" would make every name on the LAN
// configured; a negated pattern ("!home") never claims a name.
func (c *SSHConfig) Configures(name string) bool {
	if c == nil || c.cfg == nil {
		return false
	}
	return configures(c.cfg, strings.ToLower(name), c.home, 0)
}

func configures(cfg *ssh_config.Config, name, home string, depth int) bool {
	for _, h := range cfg.Hosts {
		if names(h, name) && h.Matches(name) {
			return true
		}
		if depth >= maxIncludeDepth {
			continue
		}
		for _, n := range h.Nodes {
			inc, ok := n.(*ssh_config.Include)
			if !ok || (len(h.Patterns) > 0 && !h.Matches(name)) {
				continue
			}
			for _, sub := range included(inc, home) {
				if configures(sub, name, home, depth+1) {
					return true
				}
			}
		}
	}
	return false
}

// names reports whether one of h's patterns is name itself, no wildcard.
func names(h *ssh_config.Host, name string) bool {
	for _, p := range h.Patterns {
		s := p.String()
		if !strings.ContainsAny(s, "*?!") && s == name {
			return true
		}
	}
	return false
}

// included parses the files an Include line names (see includePaths),
// globs expanded. Unreadable files are skipped (ssh_config already read
// them once to resolve options).
func included(inc *ssh_config.Include, home string) []*ssh_config.Config {
	line := strings.TrimLeft(inc.String(), " \t")
	end := strings.IndexAny(line, " \t=")
	if end < 0 {
		return nil
	}
	var out []*ssh_config.Config
	for _, p := range includePaths(line[end:], home, filepath.Join(home, ".ssh")) {
		matches, _ := filepath.Glob(p)
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				continue
			}
			if cfg, err := ssh_config.DecodeBytes(b); err == nil {
				out = append(out, cfg)
			}
		}
	}
	return out
}
