package discovery

import (
	"fmt"
	"strings"
)

// UnsupportedOptionError: ~/.ssh/config sets, for a host, something that
// changes where or how OpenSSH would connect to it and that messor does not
// do. The host is refused rather than reached some other way.
type UnsupportedOptionError struct {
	Host   string // messor name
	Option string // the keyword ("RemoteCommand"), or "Match CRITERIA"
	Value  string
	Where  string // "file:line" of a Match line; else empty
	Fix    string // what the user can do
}

func (e *UnsupportedOptionError) Error() string {
	opt := e.Option
	if e.Value != "" {
		opt += " " + e.Value
	}
	if e.Where != "" {
		opt += " (" + e.Where + ")"
	}
	return fmt.Sprintf("ssh config: host %s: %s: messor does not support this, and it changes how ssh reaches the host, so messor refuses the host; %s", e.Host, opt, e.Fix)
}

// refusedOptions are the ssh_config options that change where or how ssh
// connects and that messor does not implement. ControlMaster, ControlPath
// and ControlPersist are not among them: sharing a connection changes
// nothing about where it goes, and messor always opens its own.
var refusedOptions = []struct {
	key     string
	applies func(v string, get func(key string) string) bool
	off     string // the value that turns it off for a host, if any
}{
	{"RemoteCommand", notNone, "none"},
	{"LocalCommand", func(v string, get func(string) string) bool {
		return v != "" && strings.EqualFold(get("PermitLocalCommand"), "yes")
	}, ""},
	{"ProxyUseFdpass", isYes, "no"},
	{"Tunnel", func(v string, _ func(string) string) bool { return v != "" && !strings.EqualFold(v, "no") }, "no"},
	{"CanonicalizeHostname", func(v string, _ func(string) string) bool {
		return strings.EqualFold(v, "yes") || strings.EqualFold(v, "always")
	}, "no"},
	{"KnownHostsCommand", notNone, "none"},
	{"BindAddress", func(v string, _ func(string) string) bool { return v != "" }, ""},
	{"BindInterface", func(v string, _ func(string) string) bool { return v != "" }, ""},
}

func notNone(v string, _ func(string) string) bool { return v != "" && !strings.EqualFold(v, "none") }
func isYes(v string, _ func(string) string) bool   { return strings.EqualFold(v, "yes") }

// checkRefused returns an *UnsupportedOptionError for the first refused
// option set for name.
func (c *SSHConfig) checkRefused(name string) error {
	get := func(key string) string { return c.get(strings.ToLower(name), key) } // as resolveBase
	for _, r := range refusedOptions {
		v := get(r.key)
		if !r.applies(v, get) {
			continue
		}
		fix := fmt.Sprintf("remove it from the Host or Match blocks that apply to %s", name)
		if r.off != "" {
			fix = fmt.Sprintf("set \"%s %s\" in a \"Host %s\" block above them, or remove it", r.key, r.off, name)
		}
		if r.key == "LocalCommand" {
			fix = fmt.Sprintf("set \"PermitLocalCommand no\" in a \"Host %s\" block above them", name)
		}
		return &UnsupportedOptionError{Host: name, Option: r.key, Value: v, Fix: fix}
	}
	return nil
}

// checkMatches refuses name when a Match block that messor cannot evaluate
// may apply to it and sets something messor reads, or when a "Match host"
// line would apply by name but not by HostName (or the other way round).
func (c *SSHConfig) checkMatches(name, hostname string) error {
	if c == nil {
		return nil
	}
	for _, m := range c.matches {
		where := fmt.Sprintf("%s:%d", m.file, m.line)
		if m.byName {
			cr := m.crit[0]
			// OpenSSH matches "host" against the HostName set before
			// the Match line: when the HostName in force is the one this
			// block sets, none was set before, and the name is matched.
			seen := hostname
			if m.hostName != "" && strings.EqualFold(m.hostName, hostname) {
				seen = name
			}
			if cr.name == "host" && matchList(cr.arg, name) != matchList(cr.arg, seen) {
				return &UnsupportedOptionError{Host: name, Option: "Match " + m.text, Where: where,
					Fix: fmt.Sprintf("ssh matches it against the HostName %s, messor against the name %s; write it as \"Host\" or \"Match originalhost\"", hostname, name)}
			}
			continue
		}
		if !m.matters() || m.excludes(name, hostname) {
			continue
		}
		return &UnsupportedOptionError{Host: name, Option: "Match " + m.text, Where: where,
			Fix: fmt.Sprintf("messor evaluates only \"Match all\", \"Match host\" and \"Match originalhost\" alone, so it cannot tell whether this block applies to %s; add \"originalhost\" patterns that leave %s out, or move what %s needs into a Host block", name, name, name)}
	}
	return nil
}
