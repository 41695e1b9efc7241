package discovery

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/messor-sync/messor/protocol"
)

// The parser we use (github.com/kevinburke/ssh_config v1.6.0) knows two
// kinds of Match line: "Match all", and "Match host" with patterns, which it
// matches against the alias (OpenSSH: against the HostName given by earlier
// lines). Any other criterion (exec, user, localuser, originalhost,
// canonical, final, tagged, localnetwork) makes it refuse the whole file,
// and "Match host a user b" it reads as three host patterns. So the Match
// lines of ~/.ssh/config are read here first and rewritten, line for line,
// into Host lines the parser understands:
//
//   - "Match all" becomes "Host *", and "Match host LIST" or "Match
//     originalhost LIST" (one criterion, not negated) becomes "Host" with
//     LIST's patterns: they are applied by name. For "Match host", a host
//     whose HostName differs from its name and which the patterns judge
//     differently by the two is refused (see SSHConfig.checkMatches).
//   - Any other Match line becomes a block that applies to no host (the
//     parser never sees its criteria), and each host it might apply to is
//     refused, unless the block sets nothing messor reads or refuses (its
//     keywords are recorded), or a host or originalhost criterion of the
//     line excludes the host.
//
// Match lines in Included files (which the parser reads itself) are held
// to the first form, and their "Match host" refuses hosts as above; any
// other is an error naming file and line.

// matchBlock is one Match line of the config file and what its block sets.
type matchBlock struct {
	file string
	line int
	text string // the criteria as written
	crit []criterion
	// byName: the line was rewritten to a Host line the parser applies.
	byName bool
	keys   []string // lower-case keywords set in the block
	// hostName is the HostName the block itself sets, if any.
	hostName string
}

// criterion is one criterion of a Match line: "host a,b", "!exec cmd".
type criterion struct {
	name   string // lower case
	negate bool
	arg    string
}

// matchArgs says which Match criteria take an argument.
var matchArgs = map[string]bool{
	"all": false, "canonical": false, "final": false,
	"exec": true, "host": true, "originalhost": true, "user": true, "localuser": true,
	"tagged": true, "localnetwork": true,
}

// parseMatch reads the criteria of a Match line.
func parseMatch(rest string) ([]criterion, error) {
	words, err := splitArgs(rest)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("Match without criteria")
	}
	var out []criterion
	for i := 0; i < len(words); i++ {
		c := criterion{name: strings.ToLower(words[i])}
		if strings.HasPrefix(c.name, "!") {
			c.negate, c.name = true, c.name[1:]
		}
		takes, ok := matchArgs[c.name]
		if !ok {
			return nil, fmt.Errorf("unknown Match criterion %q", words[i])
		}
		if takes {
			if i+1 == len(words) {
				return nil, fmt.Errorf("Match %s needs an argument", c.name)
			}
			i++
			c.arg = words[i]
		}
		out = append(out, c)
	}
	return out, nil
}

// splitArgs splits a config line's arguments at white space, keeping
// double-quoted strings whole (without the quotes).
func splitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			in = true
		case !quoted && (r == ' ' || r == '\t'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unbalanced quotes")
	}
	if in {
		out = append(out, cur.String())
	}
	return out, nil
}

// splitKeyword splits a config line into its lower-case keyword and the
// rest ("Key value", "Key=value", "Key = value"); "" for a blank line or a
// comment.
func splitKeyword(line string) (key, rest string) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", ""
	}
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return strings.ToLower(line), ""
	}
	key, rest = strings.ToLower(line[:i]), strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimLeft(strings.TrimPrefix(rest, "="), " \t")
	return key, rest
}

// simpleMatch reports whether a Match line is one the parser applies by
// name: "all", or one "host"/"originalhost" criterion, not negated.
func simpleMatch(crit []criterion) bool {
	if len(crit) != 1 || crit[0].negate {
		return false
	}
	switch crit[0].name {
	case "all", "host", "originalhost":
		return true
	}
	return false
}

// rewriteMatches rewrites the Match lines of a config file (see the top of
// this file) and returns the blocks it found.
func rewriteMatches(b []byte, file string) ([]byte, []*matchBlock, error) {
	lines := strings.Split(string(b), "\n")
	var blocks []*matchBlock
	var cur *matchBlock
	for i, line := range lines {
		key, rest := splitKeyword(line)
		switch key {
		case "":
		case "host":
			cur = nil
			if _, err := splitArgs(rest); err != nil {
				return nil, nil, &LineError{file, i + 1, fmt.Errorf("Host: %w", err)} // as OpenSSH
			}
		case "match":
			crit, err := parseMatch(rest)
			if err != nil {
				return nil, nil, &LineError{file, i + 1, err}
			}
			cur = &matchBlock{file: file, line: i + 1, text: strings.TrimSpace(rest), crit: crit, byName: simpleMatch(crit)}
			blocks = append(blocks, cur)
			switch {
			case cur.byName && crit[0].name == "all":
				lines[i] = "Host *"
			case cur.byName:
				lines[i] = "Host " + strings.Join(strings.Split(crit[0].arg, ","), " ")
			default:
				lines[i] = "Host !*" // applies to no host
			}
		default:
			if cur != nil {
				cur.keys = append(cur.keys, key)
				if key == "hostname" && cur.hostName == "" {
					cur.hostName, _, _ = strings.Cut(rest, " ")
				}
			}
		}
	}
	return []byte(strings.Join(lines, "\n")), blocks, nil
}

// checkIncluded reads the files that b's Include lines name (as the parser
// will: relative to c.dir, at most 5 deep) and fails on a Match line in
// them that the parser would misread or refuse: any but "Match all" and
// one "host" criterion without commas, which it reads by name; and on a
// Host or Match line whose patterns the parser would read otherwise than
// OpenSSH (see plainPatterns; configLines rewrites them only in the config
// itself). The Match lines it reads by name are added to
// c.matches, for checkMatches to refuse the hosts OpenSSH would judge
// differently by their HostName. depth is 0 for ~/.ssh/config itself,
// whose Match lines rewriteMatches handles.
func (c *SSHConfig) checkIncluded(b []byte, file, home string, depth int) error {
	if depth > 5 {
		return nil // the parser refuses it itself
	}
	if depth > 0 {
		_, blocks, err := rewriteMatches(b, file)
		if err != nil {
			return err
		}
		c.matches = append(c.matches, blocks...)
	}
	for i, line := range strings.Split(string(b), "\n") {
		key, rest := splitKeyword(line)
		switch {
		case (key == "host" || key == "match") && depth > 0 && !plainPatterns(rest):
			return &LineError{file, i + 1, fmt.Errorf("%s %s in an Included file: messor reads patterns there as written, so they must be in lower case, without quotes or tabs; rewrite them, or move the block to ~/.ssh/config itself", key, strings.TrimSpace(rest))}
		case key == "match" && depth > 0:
			crit, err := parseMatch(rest)
			if err != nil {
				return &LineError{file, i + 1, err}
			}
			if !simpleMatch(crit) || crit[0].name == "originalhost" || strings.Contains(crit[0].arg, ",") {
				return &LineError{file, i + 1, fmt.Errorf("Match %s in an Included file: messor reads only \"Match all\" and \"Match host PATTERNS\" there; move it to ~/.ssh/config itself", strings.TrimSpace(rest))}
			}
		case key == "include":
			pats, err := splitArgs(rest)
			if err != nil {
				return &LineError{file, i + 1, err}
			}
			for _, p := range pats {
				if strings.ContainsAny(p, " \t") {
					return &LineError{file, i + 1, fmt.Errorf("Include %q: messor cannot read a path with a blank in it (its parser splits it); rename the file", p)}
				}
				if err := c.checkIncludeGlob(p, home, depth); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// plainPatterns reports whether the value of a Host or Match line (up to a
// comment) has no upper case, quotes or tabs: whether the parser, which
// reads it as written, reads it as OpenSSH does for the lower-case names
// Resolve looks up.
func plainPatterns(rest string) bool {
	if key, args, ok := strings.Cut(rest, " "); ok && strings.EqualFold(key, "host") {
		rest = args // "Match Host PATTERNS": the criterion may be in any case
	}
	if i := strings.Index(rest, "#"); i >= 0 && (i == 0 || rest[i-1] == ' ' || rest[i-1] == '\t') {
		rest = rest[:i]
	}
	rest = strings.TrimRight(rest, " \t")
	return !strings.ContainsAny(rest, "\"\t") && rest == strings.ToLower(rest)
}

// checkIncludeGlob runs checkIncluded on the files an Include pattern names.
func (c *SSHConfig) checkIncludeGlob(p, home string, depth int) error {
	switch {
	case strings.HasPrefix(p, "~/"):
		p = filepath.Join(home, p[2:])
	case !filepath.IsAbs(p):
		p = filepath.Join(c.dir, p)
	}
	files, _ := filepath.Glob(p)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("Include: %w", err)
		}
		if err := c.checkIncluded(b, f, home, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// matchList matches name against an OpenSSH pattern list ("a*,!b"): no
// negated pattern may match, and some other must. Case is ignored.
func matchList(list, name string) bool {
	name = strings.ToLower(name)
	found := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if protocol.MatchPattern(name, strings.ToLower(p)) {
			if neg {
				return false
			}
			found = true
		}
	}
	return found
}

// excludes reports whether a host or originalhost criterion of m rules out
// the host named name with HostName hostname (for "host", whichever of the
// two OpenSSH would use).
func (m *matchBlock) excludes(name, hostname string) bool {
	for _, c := range m.crit {
		switch c.name {
		case "originalhost":
			if matchList(c.arg, name) == c.negate {
				return true
			}
		case "host":
			if matchList(c.arg, name) == c.negate && matchList(c.arg, hostname) == c.negate {
				return true
			}
		}
	}
	return false
}

// matters reports whether the block sets something messor reads or
// refuses (or Includes a file, which may).
func (m *matchBlock) matters() bool {
	for _, k := range m.keys {
		if readKeys[k] || k == "include" {
			return true
		}
		for _, r := range refusedOptions {
			if strings.ToLower(r.key) == k {
				return true
			}
		}
	}
	return false
}

// readKeys are the ssh_config keywords Resolve reads (PermitLocalCommand:
// whether a LocalCommand is refused).
var readKeys = map[string]bool{
	"hostname": true, "port": true, "user": true, "identityfile": true, "userknownhostsfile": true,
	"hostkeyalias": true, "stricthostkeychecking": true, "connecttimeout": true,
	"proxyjump": true, "proxycommand": true, "permitlocalcommand": true,
}
