package agent

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestMatchFrom: from= lists match as sshd's match_host_and_ip with UseDNS
// no: addresses, CIDR networks, * and ? patterns against the address text,
// ! negation winning, host names never matching.
func TestMatchFrom(t *testing.T) {
	for _, c := range []struct {
		list, addr string
		want       bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"127.0.0.2", "127.0.0.1", false},
		{"10.0.0.0/8", "10.1.2.3", true},
		{"10.0.0.0/8", "11.1.2.3", false},
		{"192.168.1.*", "192.168.1.77", true},
		{"192.168.1.?", "192.168.1.77", false},
		{"192.168.1.??", "192.168.1.77", true},
		{"*", "203.0.113.9", true},
		{"!10.*,*", "10.0.0.1", false},
		{"*,!10.*", "10.0.0.1", false}, // negation wins wherever it stands
		{"!10.*,*", "11.0.0.1", true},
		{"!10.*", "11.0.0.1", false}, // a negation alone allows nothing
		{"!10.0.0.0/8,127.0.0.0/8", "127.0.0.1", true},
		{"::1", "::1", true},
		{"fe80::/10", "fe80::1", true},
		{"FE80::*", "fe80::1", true},
		{"2001:db8::/32", "2001:db9::1", false},
		{"127.0.0.0/8", "::ffff:127.0.0.1", true}, // a mapped address is its IPv4 one
		{"10.0.0.0/8", "::ffff:10.0.0.1", true},
		{"localhost", "127.0.0.1", false}, // names are not resolved
		{"*.example.com", "127.0.0.1", false},
		{"127.0.0.1/40x", "127.0.0.1", false}, // not a network: a pattern that fails
		{"::1/129", "::1", false},             // as sshd: too long a mask is a pattern
	} {
		got, err := matchFrom(c.list, netip.MustParseAddr(c.addr))
		if err != nil || got != c.want {
			t.Errorf("matchFrom(%q, %s) = %v, %v; want %v", c.list, c.addr, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "10.0.0.1,", "!", "10.1.2.3/8", "10.0.0.0/33"} {
		if ok, err := matchFrom(bad, netip.MustParseAddr("10.1.2.3")); err == nil {
			t.Errorf("matchFrom(%q) = %v, no error", bad, ok)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	loc := time.FixedZone("here", 2*3600)
	for s, want := range map[string]time.Time{
		"20300102":        time.Date(2030, 1, 2, 0, 0, 0, 0, loc),
		"203001021504":    time.Date(2030, 1, 2, 15, 4, 0, 0, loc),
		"20300102150405":  time.Date(2030, 1, 2, 15, 4, 5, 0, loc),
		"20300102150405Z": time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC),
		"203001021504z":   time.Date(2030, 1, 2, 15, 4, 0, 0, time.UTC),
		"20300102UTC":     time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseExpiry(s, loc)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "2030", "2030010", "20301301", "2030-01-02", "20300102 1504", "+0300102", "Z"} {
		if got, err := parseExpiry(bad, loc); err == nil {
			t.Errorf("parseExpiry(%q) = %v, no error", bad, got)
		}
	}
}

// TestParseAuthorizedKeyLine: which options let a key in, under which
// conditions, and which keep it out (named in the error).
func TestParseAuthorizedKeyLine(t *testing.T) {
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey())))
	loopback := netip.MustParseAddr("127.0.0.1")
	now := time.Now()
	accepted := []string{
		"",
		"restrict",
		`restrict,command="internal-sftp"`,
		`RESTRICT,Command="internal-sftp"`,
		`no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc`,
		`command="/usr/lib/openssh/sftp-server"`,
		`command="/usr/libexec/sftp-server"`,
		`permitopen="host:22",permitlisten="localhost:8080"`,
		`from="127.0.0.0/8"`,
		`expiry-time="29991231"`,
	}
	for _, opts := range accepted {
		k, ok, err := parseAuthorizedKeyLine([]byte(strings.TrimSpace(opts+" "+key+" me@phone")), 3)
		if !ok || err != nil {
			t.Errorf("%s: refused: %v", opts, err)
			continue
		}
		if err := k.permits(loopback, now); err != nil {
			t.Errorf("%s: login from 127.0.0.1 refused: %v", opts, err)
		}
	}
	refused := map[string]string{
		`command="/bin/sh"`:                               `command="/bin/sh"`,
		`command="internal-sftp -R"`:                      "internal-sftp -R",
		`command="internal-sftp -d /srv"`:                 "-d /srv",
		`command="sftp-server"`:                           "sftp-server",
		`command="internal-sftp",command="internal-sftp"`: "twice",
		`from="10.*",from="127.*"`:                        "twice",
		`from="10.1.2.3/8"`:                               "host bits",
		`from=10.0.0.1`:                                   "quote",
		`expiry-time="tomorrow"`:                          "YYYYMMDD",
		`cert-authority`:                                  "certificates",
		`principals="me"`:                                 "certificates",
		`pty`:                                             "pty",
		`restrict,port-forwarding`:                        "port-forwarding",
		`environment="PATH=/tmp"`:                         "environment",
		`tunnel="0"`:                                      "tunnel",
		`no-touch-required`:                               "no-touch-required",
		`verify-required`:                                 "verify-required",
		`no-pty="x"`:                                      "no-pty",
		`frobnicate`:                                      "frobnicate",
	}
	for opts, want := range refused {
		_, ok, err := parseAuthorizedKeyLine([]byte(opts+" "+key), 3)
		var oe *optionError
		if ok || !errors.As(err, &oe) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: ok %v, err %v; want an option error naming %q", opts, ok, err, want)
		}
	}
	for _, blank := range []string{"", "   ", "# restrict " + key} {
		if _, ok, err := parseAuthorizedKeyLine([]byte(blank), 1); ok || err != nil {
			t.Errorf("%q: ok %v, err %v; want skipped quietly", blank, ok, err)
		}
	}
	for _, garbage := range []string{"ssh-ed25519 garbage", `command="internal-sftp ` + key} {
		if _, ok, err := parseAuthorizedKeyLine([]byte(garbage), 1); ok || err == nil {
			t.Errorf("%s: ok %v, err %v; want refused", garbage, ok, err)
		}
	}
}

// TestPermits: the conditions of a parsed line, at the edges.
func TestPermits(t *testing.T) {
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(t).PublicKey())))
	k, ok, err := parseAuthorizedKeyLine([]byte(`expiry-time="20300102150405Z",expiry-time="20300101Z",from="127.0.0.1,::1" `+key), 1)
	if !ok || err != nil {
		t.Fatal(err)
	}
	end := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // the earlier expiry-time wins
	for _, c := range []struct {
		addr string
		at   time.Time
		want bool
	}{
		{"127.0.0.1", end, true},
		{"::1", end.Add(-time.Hour), true},
		{"127.0.0.1", end.Add(time.Second), false},
		{"127.0.0.2", end.Add(-time.Hour), false},
	} {
		err := k.permits(netip.MustParseAddr(c.addr), c.at)
		if (err == nil) != c.want || (err != nil && !errors.Is(err, errRefused)) {
			t.Errorf("from %s at %v: %v; want allowed %v", c.addr, c.at, err, c.want)
		}
	}
	if err := k.permits(netip.Addr{}, end); err == nil {
		t.Error("a connection with no IP address passed a from= check")
	}
}

// TestParseAuthorizedKeyLineAsSSHD: the line is split as sshd's
// check_authkey_line does: a key at the start, or options up to the first
// blank outside quotes and then the key. A second key hidden in a quoted
// option value is text, never the line's key; an empty option keeps the
// key out, as sshd's "unsupported option".
func TestParseAuthorizedKeyLineAsSSHD(t *testing.T) {
	listed := newSigner(t).PublicKey()
	hidden := newSigner(t).PublicKey()
	hiddenB64 := strings.Fields(string(ssh.MarshalAuthorizedKey(hidden)))[1]
	listedText := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(listed)))
	line := `from="192.0.2.1",environment="X=y ` + hiddenB64 + ` z" ` + listedText
	k, ok, _ := parseAuthorizedKeyLine([]byte(line), 1)
	if ok && string(k.key.Marshal()) == string(hidden.Marshal()) {
		t.Fatalf("the key inside a quoted option value was read as the line's key, with options %q", k.from)
	}
	for _, opts := range []string{`restrict,,no-pty`, `,restrict`, `restrict,`, `from="127.0.0.1",`} {
		if _, ok, err := parseAuthorizedKeyLine([]byte(opts+" "+listedText), 1); ok || err == nil {
			t.Errorf("%s: ok %v, err %v; want refused (empty option)", opts, ok, err)
		}
	}
	quoted := `command="internal-sftp",from="127.0.0.1,\"x,y\"" ` + listedText + " a, comment"
	if k, ok, err := parseAuthorizedKeyLine([]byte(quoted), 1); !ok || err != nil || k.from != `127.0.0.1,"x,y"` {
		t.Errorf("%s: from %q, ok %v, err %v", quoted, k.from, ok, err)
	}
	if _, ok, err := parseAuthorizedKeyLine([]byte("ssh-rsa "+strings.Fields(listedText)[1]), 1); ok {
		t.Errorf("a key under another type's name was accepted (sshd reads no key there): %v", err)
	}
	if k, ok, err := parseAuthorizedKeyLine([]byte("restrict\t"+listedText+" c\r"), 1); !ok || err != nil || !bytesEqualKey(k.key, listed) {
		t.Errorf("tab and CRLF: ok %v, err %v", ok, err)
	}
}

func bytesEqualKey(a, b ssh.PublicKey) bool { return string(a.Marshal()) == string(b.Marshal()) }

// TestMatchFromAsSSHD: the corners where sshd's address matching is not
// Go's: a link-local client (it has a zone) never matches an address or
// network written without one (sshd compares the scope id), and IPv4 is
// read as getaddrinfo reads it (127.1, 0x7f.0.0.1, 010.0.0.1 octal), so a
// negated shorthand still refuses.
func TestMatchFromAsSSHD(t *testing.T) {
	for _, c := range []struct {
		list, addr string
		want       bool
	}{
		{"fe80::1", "fe80::1%eth0", false},
		{"fe80::/10", "fe80::1%eth0", false},
		{"fe80::1%eth0", "fe80::1%eth0", true},
		{"fe80::*", "fe80::1%eth0", true}, // a pattern sees the zone in the text
		{"*,!127.1", "127.0.0.1", false},
		{"*,!0x7f.0.0.1", "127.0.0.1", false},
		{"127.1", "127.0.0.1", true},
		{"010.0.0.1", "8.0.0.1", true},
		{"010.0.0.1", "10.0.0.1", false},
		{"127.0.0/24", "127.0.0.9", true}, // 127.0.0 is 127.0.0.0
		{"2130706433", "127.0.0.1", true},
	} {
		got, err := matchFrom(c.list, netip.MustParseAddr(c.addr))
		if err != nil || got != c.want {
			t.Errorf("matchFrom(%q, %s) = %v, %v; want %v", c.list, c.addr, got, err, c.want)
		}
	}
	for _, bad := range []string{"10/8", "127.1/8"} { // host bits set, as sshd reads them
		if ok, err := matchFrom(bad, netip.MustParseAddr("10.1.2.3")); err == nil {
			t.Errorf("matchFrom(%q) = %v, no error", bad, ok)
		}
	}
}

// TestParseInetAton: IPv4 text as glibc 2.36's getaddrinfo(AI_NUMERICHOST)
// reads it ("" where it refuses), the reading sshd's from= gets.
func TestParseInetAton(t *testing.T) {
	for in, want := range map[string]string{
		"127.1": "127.0.0.1", "0X7F.1": "127.0.0.1", "010.0.0.1": "8.0.0.1", "1.2.3.04": "1.2.3.4",
		"1.65536": "1.1.0.0", "1.2.65535": "1.2.255.255", "4294967295": "255.255.255.255",
		"0xffffffff": "255.255.255.255", "00": "0.0.0.0",
		"0x": "", "1.0x": "", "08": "", "1.2.3.256": "", "1.2.65536": "", "4294967296": "",
		"0x100.0.0.1": "", "1..2": "", "1.2.3.4.": "", "-1": "", "+1": "", "1e3": "", "": "",
	} {
		a, ok := parseInetAton(in)
		if got := a.String(); (ok && got != want) || (!ok && want != "") {
			t.Errorf("parseInetAton(%q) = %s, %v; want %q", in, got, ok, want)
		}
	}
}
