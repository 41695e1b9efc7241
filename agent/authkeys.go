package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

// authorizedKey is one usable line of an authorized_keys file: the key and
// the conditions its options put on a login.
type authorizedKey struct {
	key  ssh.PublicKey
	line int // 1-based line number, for logs
	// from is the from= pattern list ("" for none), matched as sshd does
	// with UseDNS no (see matchFrom).
	from string
	// expiry is the expiry-time= (zero for none): a login after it is
	// refused, as sshd's "key expired".
	expiry time.Time
}

// optionError says why a line's options keep its key out.
type optionError struct {
	Option string // the option as written, e.g. `command="/bin/sh"`
	Reason string
}

func (e *optionError) Error() string { return fmt.Sprintf("option %s: %s", e.Option, e.Reason) }

// errRefused is wrapped by permits' errors: the line's options refuse this
// login.
var errRefused = errors.New("refused by the key's options")

// parseAuthorizedKeyLine parses one line of authorized_keys. It returns
// ok=false, err=nil for a blank line or a comment; err for a line that is
// not a key, or whose options the agent cannot honour (an *optionError).
func parseAuthorizedKeyLine(line []byte, n int) (k authorizedKey, ok bool, err error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		return k, false, nil
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return k, false, fmt.Errorf("not a key: %w", err)
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		return k, false, errors.New("a certificate, not a key")
	}
	options, err := splitOptions(line, key.Type())
	if err != nil {
		return k, false, err
	}
	k = authorizedKey{key: key, line: n}
	if err := k.applyOptions(options); err != nil {
		return k, false, err
	}
	return k, true, nil
}

// splitOptions returns the options field that starts line (none when the
// line starts with keyType), split at commas outside quotes as sshd's
// sshauthopt_parse walks it: \" does not end a quote, and an empty option
// (",,", a leading or trailing comma) keeps the key out, as sshd's
// "unsupported option" does. ssh.ParseAuthorizedKey drops empty options.
func splitOptions(line []byte, keyType string) ([]string, error) {
	if rest, ok := bytes.CutPrefix(line, []byte(keyType)); ok && len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		return nil, nil
	}
	var opts []string
	start, quoted := 0, false
	for i := 0; i <= len(line); i++ {
		end := i == len(line) || (!quoted && (line[i] == ' ' || line[i] == '\t'))
		switch {
		case end || (!quoted && line[i] == ','):
			if i == start {
				return nil, &optionError{string(line[:i]), "an empty option (sshd refuses the line too)"}
			}
			opts = append(opts, string(line[start:i]))
			if end {
				return opts, nil
			}
			start = i + 1
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '"':
			i++
		case line[i] == '"':
			quoted = !quoted
		}
	}
	return opts, nil
}

// Options the agent accepts and ignores: each takes away something the
// agent never grants (a shell, a pty, forwarding, ~/.ssh/rc), or limits
// forwarding it never does. Options that grant what the agent cannot give
// (pty, port-forwarding, environment=, tunnel=, no-touch-required: the
// agent always wants a security key touched, ...) and those that need what
// it lacks (cert-authority, principals=, verify-required) are refused
// with the key, as is any option not listed here.
var (
	ignoredFlags = map[string]bool{
		"restrict": true, "no-pty": true, "no-port-forwarding": true, "no-agent-forwarding": true,
		"no-x11-forwarding": true, "no-user-rc": true,
	}
	ignoredValues = map[string]bool{"permitopen": true, "permitlisten": true}
)

// applyOptions sets k's conditions from the options of its line, as sshd's
// auth-options.c reads them: names case-insensitive, values quoted, from=
// and command= at most once, the earliest expiry-time= wins.
func (k *authorizedKey) applyOptions(options []string) error {
	seen := map[string]bool{}
	for _, opt := range options {
		name, raw, hasValue := strings.Cut(opt, "=")
		name = strings.ToLower(name)
		var value string
		if hasValue {
			v, err := dequote(raw)
			if err != nil {
				return &optionError{opt, err.Error()}
			}
			value = v
		}
		if (name == "from" || name == "command") && seen[name] {
			return &optionError{opt, "given twice (sshd refuses the line too)"}
		}
		seen[name] = true
		if err := k.applyOption(opt, name, value, hasValue); err != nil {
			return err
		}
	}
	return nil
}

func (k *authorizedKey) applyOption(opt, name, value string, hasValue bool) error {
	switch {
	case !hasValue && ignoredFlags[name], hasValue && ignoredValues[name]:
		return nil
	case name == "command" && hasValue:
		if !isSFTPServer(value) {
			return &optionError{opt, "the agent serves nothing but SFTP, so it cannot run this command; only command=\"internal-sftp\" (or an sftp-server path) without arguments is accepted"}
		}
		return nil
	case name == "from" && hasValue:
		if _, err := matchFrom(value, netip.Addr{}); err != nil {
			return &optionError{opt, err.Error()}
		}
		k.from = value
		return nil
	case name == "expiry-time" && hasValue:
		t, err := parseExpiry(value, time.Local)
		if err != nil {
			return &optionError{opt, err.Error()}
		}
		if k.expiry.IsZero() || t.Before(k.expiry) {
			k.expiry = t
		}
		return nil
	case name == "cert-authority" || name == "principals":
		return &optionError{opt, "the agent accepts keys only, not certificates"}
	}
	return &optionError{opt, "not supported by the agent (it grants or needs something the agent cannot provide)"}
}

// dequote undoes sshd's quoting of an option value: "..." with \" for a
// quote inside.
func dequote(s string) (string, error) {
	if !strings.HasPrefix(s, `"`) {
		return "", errors.New("missing start quote")
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '"':
			b.WriteByte('"')
			i++
		case s[i] == '"':
			if i != len(s)-1 {
				return "", errors.New("text after the closing quote")
			}
			return b.String(), nil
		default:
			b.WriteByte(s[i])
		}
	}
	return "", errors.New("missing end quote")
}

// isSFTPServer reports whether a command= is an SFTP server with no
// arguments: internal-sftp, or an absolute path to sftp-server (as
// /usr/lib/openssh/sftp-server). Arguments (-d, -R, -P, ...) would change
// what is served, which the agent cannot honour.
func isSFTPServer(cmd string) bool {
	cmd = strings.TrimSpace(cmd)
	return cmd == "internal-sftp" || (path.IsAbs(cmd) && path.Base(cmd) == "sftp-server")
}

// parseExpiry parses expiry-time's YYYYMMDD[HHMM[SS]], in loc unless it
// ends in Z or UTC (as OpenSSH's parse_absolute_time).
func parseExpiry(s string, loc *time.Location) (time.Time, error) {
	up := strings.ToUpper(s)
	switch {
	case strings.HasSuffix(up, "UTC"):
		s, loc = s[:len(s)-3], time.UTC
	case strings.HasSuffix(up, "Z"):
		s, loc = s[:len(s)-1], time.UTC
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(s)]
	if !ok || strings.Trim(s, "0123456789") != "" {
		return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", s)
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: %w", s, err)
	}
	return t, nil
}

// permits reports, as an error wrapping errRefused, why k's options refuse a
// login from addr at now; nil if they allow it. addr may be invalid (a
// connection not over IP), which no from= matches.
func (k authorizedKey) permits(addr netip.Addr, now time.Time) error {
	if !k.expiry.IsZero() && now.After(k.expiry) {
		return fmt.Errorf("%w: key expired at %s", errRefused, k.expiry.Format(time.RFC3339))
	}
	if k.from != "" {
		if ok, _ := matchFrom(k.from, addr); !ok { // the list was checked when parsed
			return fmt.Errorf("%w: not from an allowed address (from=%q)", errRefused, k.from)
		}
	}
	return nil
}

// matchFrom matches a client address against a from= pattern list as sshd
// with UseDNS no (its default) does in match_host_and_ip, the address
// standing for the host name too: each comma-separated entry is an
// address, a CIDR network (host bits zero; see parseNetwork) or a pattern
// with * and ? that is matched against the address as text (a link-local
// client's with its zone, as "fe80::1%eth0"); ! before an entry negates it. A
// negated entry that matches refuses; otherwise any positive match allows.
// Host names in the list never match (the agent resolves no names). An
// empty entry or a network with host bits set is an error, as for sshd
// (which refuses the login then). An invalid addr matches nothing, which
// checks the list alone.
func matchFrom(list string, addr netip.Addr) (bool, error) {
	addr = addr.Unmap()
	text := addr.String()
	positive, refused := false, false
	for _, entry := range strings.Split(list, ",") {
		negated := strings.HasPrefix(entry, "!")
		entry = strings.TrimPrefix(entry, "!")
		if entry == "" {
			return false, errors.New("empty entry in the address list")
		}
		var hit bool
		prefix, zone, isNet, err := parseNetwork(entry)
		switch {
		case err != nil:
			return false, err
		case !addr.IsValid():
		case isNet: // as sshd, a zone (scope id) must be the same
			hit = prefix.Contains(addr.WithZone("")) && addr.Zone() == zone
		default:
			hit = protocol.MatchPattern(text, strings.ToLower(entry))
		}
		refused = refused || (hit && negated)
		positive = positive || (hit && !negated)
	}
	return positive && !refused, nil
}

// parseNetwork reads an entry as sshd's addr_pton_cidr: an address, or an
// address with a mask length, whose host bits must be zero. isNet is false
// for what is not an address (then a pattern). Addresses are read as
// getaddrinfo reads them (IPv4 also as 127.1, 0x7f.0.0.1, 010.0.0.1), an
// IPv6 one with its zone.
func parseNetwork(entry string) (p netip.Prefix, zone string, isNet bool, err error) {
	a, bits, hasBits := strings.Cut(entry, "/")
	ip, ok := parseInetAton(a)
	if !ok {
		var perr error
		if ip, perr = netip.ParseAddr(a); perr != nil {
			return p, "", false, nil
		}
	}
	zone, ip = ip.Zone(), ip.WithZone("")
	n := ip.BitLen()
	if hasBits {
		if bits == "" || strings.Trim(bits, "0123456789") != "" || len(bits) > 3 {
			return p, "", false, nil
		}
		n, _ = strconv.Atoi(bits)
		if n > 128 {
			return p, "", false, nil
		}
	}
	if n > ip.BitLen() {
		return p, "", false, fmt.Errorf("network %s: mask longer than the address", entry)
	}
	p = netip.PrefixFrom(ip, n)
	if p.Masked().Addr() != ip {
		return p, "", false, fmt.Errorf("network %s: host bits set beyond the mask", entry)
	}
	return p, zone, true, nil
}

// parseInetAton reads an IPv4 address as glibc's inet_aton (which
// getaddrinfo, so sshd, uses): one to four parts, each decimal, octal
// (leading 0) or hex (0x), the last filling the bytes left.
func parseInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, part := range parts {
		n, ok := parseAtonPart(part)
		last := i == len(parts)-1
		if !ok || (!last && n > 0xff) || (last && n >= 1<<(8*(5-len(parts)))) {
			return netip.Addr{}, false
		}
		if last {
			v = v<<(8*(5-len(parts))) | n
		} else {
			v = v<<8 | n
		}
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseAtonPart reads one part of an inet_aton address: it starts with a
// digit; 0x (hex) or 0 (octal) set the base.
func parseAtonPart(s string) (uint64, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	base, digits := 10, s
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, digits = 16, s[2:]
	case s[0] == '0':
		base = 8
	}
	n, err := strconv.ParseUint(digits, base, 32)
	return n, err == nil
}
