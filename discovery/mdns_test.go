package discovery

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grandcat/zeroconf"
	"github.com/miekg/dns"

	"github.com/messor-sync/messor/internal/netns"
	"github.com/messor-sync/messor/protocol"
)

const (
	fpA = "SHA256:q3d7wQqXnM5w4pHZ8cXgkX7WcVJc6mQJrZ6g2bGmA1E"
	fpB = "SHA256:Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"
	fpC = "SHA256:Y29uZmxpY3RpbmdmaW5nZXJwcmludGZvcmFscGhhIQAB"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestParseTXT(t *testing.T) {
	long := strings.Repeat("x", maxFingerprintLen+1)
	tests := []struct {
		name    string
		txt     []string
		wantFP  string
		wantErr error
	}{
		{"ok", []string{"v=1", "fp=" + fpA}, fpA, nil},
		{"order and unknown keys", []string{"path=/x", "fp=" + fpA, "future", "v=1"}, fpA, nil},
		{"keys are case-insensitive", []string{"V=1", "Fp=" + fpA}, fpA, nil},
		{"empty key ignored", []string{"=junk", "v=1", "fp=" + fpA}, fpA, nil},
		{"same value twice", []string{"v=1", "v=1", "fp=" + fpA, "fp=" + fpA}, fpA, nil},
		{"value may contain =", []string{"v=1", "fp=SHA256:abc=="}, "SHA256:abc==", nil},
		{"no TXT at all", nil, "", errTXT},
		{"empty strings", []string{"", ""}, "", errTXT},
		{"missing version", []string{"fp=" + fpA}, "", errTXT},
		{"version without value", []string{"v", "fp=" + fpA}, "", errTXT},
		{"empty version", []string{"v=", "fp=" + fpA}, "", errVersion},
		{"wrong version", []string{"v=2", "fp=" + fpA}, "", errVersion},
		{"version with space", []string{"v=1 ", "fp=" + fpA}, "", errVersion},
		{"two versions", []string{"v=1", "v=2", "fp=" + fpA}, "", errTXT},
		{"missing fingerprint", []string{"v=1"}, "", errTXT},
		{"fingerprint without value", []string{"v=1", "fp"}, "", errTXT},
		{"empty fingerprint", []string{"v=1", "fp="}, "", errFingerprint},
		{"two fingerprints", []string{"v=1", "fp=" + fpA, "fp=" + fpB}, "", errTXT},
		{"fingerprint with space", []string{"v=1", "fp=SHA256:a b"}, "", errFingerprint},
		{"fingerprint with escape", []string{"v=1", `fp=SHA256:a\"b`}, "", errFingerprint},
		{"fingerprint with control byte", []string{"v=1", "fp=SHA256:\x01"}, "", errFingerprint},
		{"fingerprint not ASCII", []string{"v=1", "fp=SHA256:é"}, "", errFingerprint},
		{"fingerprint too long", []string{"v=1", "fp=" + long}, "", errFingerprint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp, err := parseTXT(tt.txt)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("parseTXT(%q) error = %v, want %v", tt.txt, err, tt.wantErr)
			}
			if fp != tt.wantFP {
				t.Errorf("parseTXT(%q) = %q, want %q", tt.txt, fp, tt.wantFP)
			}
		})
	}
}

// FuzzParseTXT feeds TXT strings (NUL-separated) to parseTXT: it must not
// panic, anything it accepts must be a valid fingerprint that was really in
// the input next to "v=1", and what formatTXT writes must parse back.
func FuzzParseTXT(f *testing.F) {
	f.Add("v=1\x00fp=" + fpA)
	f.Add("V=1\x00FP=x\x00fp=x")
	f.Add("v=2\x00fp=" + fpA)
	f.Add("fp=\x00v")
	f.Add("=\x00==\x00v==1")
	f.Add(`v=1` + "\x00" + `fp=a\"b`)
	f.Fuzz(func(t *testing.T, s string) {
		txt := strings.Split(s, "\x00")
		fp, err := parseTXT(txt)
		if err != nil {
			if fp != "" {
				t.Fatalf("error %v with fingerprint %q", err, fp)
			}
			return
		}
		if err := checkFingerprint(fp); err != nil {
			t.Fatalf("accepted bad fingerprint %q: %v", fp, err)
		}
		var sawFP, sawV bool
		for _, kv := range txt {
			k, v, _ := strings.Cut(kv, "=")
			sawFP = sawFP || strings.EqualFold(k, protocol.TxtFingerprint) && v == fp
			sawV = sawV || strings.EqualFold(k, protocol.TxtVersion) && v == protocol.Version
		}
		if !sawFP || !sawV {
			t.Fatalf("accepted %q from %q without fp=%q and v=%s", fp, txt, fp, protocol.Version)
		}
		if back, err := parseTXT(formatTXT(fp)); err != nil || back != fp {
			t.Fatalf("formatTXT(%q) parses back as %q, %v", fp, back, err)
		}
	})
}

// entry builds a ServiceEntry as the listener does.
func entry(instance string, port int, txt []string, addrs ...string) *zeroconf.ServiceEntry {
	e := zeroconf.NewServiceEntry(instance, protocol.ServiceType, protocol.Domain)
	e.HostName = "messor-x.local."
	e.Port = port
	e.Text = txt
	e.TTL = 120
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip.To4() != nil {
			e.AddrIPv4 = append(e.AddrIPv4, ip)
		} else {
			e.AddrIPv6 = append(e.AddrIPv6, ip)
		}
	}
	return e
}

func TestParseEntry(t *testing.T) {
	good := formatTXT(fpA)
	host := func(name, addr string, port int) Host {
		return Host{Name: name, HostName: addr, Port: port, Source: SourceMDNS, Agent: true, Fingerprint: fpA}
	}
	tests := []struct {
		name    string
		e       *zeroconf.ServiceEntry
		want    Host
		wantErr error // nil: success unless wantAny
		wantAny bool  // some error
	}{
		{"ok", entry("alpha", 2290, good, "10.0.0.1"), host("alpha", "10.0.0.1", 2290), nil, false},
		{"prefers IPv4", entry("alpha", 2290, good, "2001:db8::1", "fe80::1", "10.0.0.1"), host("alpha", "10.0.0.1", 2290), nil, false},
		{"global IPv6", entry("alpha", 2290, good, "fe80::1", "2001:db8::1"), host("alpha", "2001:db8::1", 2290), nil, false},
		{"IPv6 link-local needs an interface", entry("alpha", 2290, good, "fe80::1"), Host{}, errNoAddress, false},
		{"loopback is not an address", entry("alpha", 2290, good, "127.0.0.1", "::1"), Host{}, errNoAddress, false},
		{"skips unusable addresses", entry("alpha", 2290, good, "0.0.0.0", "224.0.0.251", "255.255.255.255", "10.9.8.7"), host("alpha", "10.9.8.7", 2290), nil, false},
		{"no addresses", entry("alpha", 2290, good), Host{}, errNoAddress, false},
		{"dotted name, escaped", entry(`nas\.home`, 22, good, "10.0.0.1"), host("nas.home", "10.0.0.1", 22), nil, false},
		{"port 0", entry("alpha", 0, good, "10.0.0.1"), Host{}, errPort, false},
		{"port too big", entry("alpha", 70000, good, "10.0.0.1"), Host{}, errPort, false},
		{"bad TXT", entry("alpha", 22, []string{"v=1"}, "10.0.0.1"), Host{}, errTXT, false},
		{"wrong version", entry("alpha", 22, []string{"v=0", "fp=" + fpA}, "10.0.0.1"), Host{}, errVersion, false},
		{"empty name", entry("", 22, good, "10.0.0.1"), Host{}, protocol.ErrEmptyName, false},
		{"name too long", entry(strings.Repeat("a", 65), 22, good, "10.0.0.1"), Host{}, protocol.ErrTooLong, false},
		{"escaped space", entry(`my\ laptop`, 22, good, "10.0.0.1"), Host{}, nil, true},
		{"escaped non-ASCII", entry(`caf\195\169`, 22, good, "10.0.0.1"), Host{}, nil, true},
		{"slash", entry("a/b", 22, good, "10.0.0.1"), Host{}, nil, true},
		{"leading dash", entry("-rf", 22, good, "10.0.0.1"), Host{}, nil, true},
		{"leading dot", entry(`\.messor`, 22, good, "10.0.0.1"), Host{}, nil, true},
		{"dot-dot", entry(`\.\.`, 22, good, "10.0.0.1"), Host{}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseEntry(tt.e)
			wantErr := tt.wantAny || tt.wantErr != nil
			if (err != nil) != wantErr || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("parseEntry error = %v, want %v (any: %v)", err, tt.wantErr, tt.wantAny)
			}
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("parseEntry =\n %+v, want\n %+v", h, tt.want)
			}
		})
	}
}

func TestParseEntryFromPacket(t *testing.T) {
	good := formatTXT(fpA)
	pi := packetInfo{
		ifName: "eth0",
		ifNets: []netip.Prefix{mustPrefix("192.168.1.10/24"), mustPrefix("fe80::2/64")},
	}
	tests := []struct {
		name  string
		e     *zeroconf.ServiceEntry
		src   string
		want  string
		score int
	}{
		{"link-local gets the receiving interface as zone", entry("a", 22, good, "fe80::1"), "fe80::1", "fe80::1%eth0", 13},
		{"source address wins among IPv4", entry("a", 22, good, "172.17.0.1", "192.168.1.20", "10.1.1.1"), "10.1.1.1", "10.1.1.1", 103},
		{"then the receiving subnet", entry("a", 22, good, "172.17.0.1", "192.168.1.20"), "fe80::1", "192.168.1.20", 102},
		{"then the first", entry("a", 22, good, "172.17.0.1", "10.0.0.1"), "", "172.17.0.1", 100},
		{"IPv4 beats the IPv6 source", entry("a", 22, good, "fe80::1", "172.17.0.1"), "fe80::1", "172.17.0.1", 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pi
			if tt.src != "" {
				p.src = mustAddr(tt.src)
			}
			h, addrs, score, err := parseEntryFrom(tt.e, p)
			if err != nil {
				t.Fatal(err)
			}
			if h.HostName != tt.want || score != tt.score {
				t.Errorf("HostName %q score %d, want %q %d", h.HostName, score, tt.want, tt.score)
			}
			if len(addrs) != len(tt.e.AddrIPv4)+len(tt.e.AddrIPv6) {
				t.Errorf("addrs = %v", addrs)
			}
			if want := "[" + strings.TrimPrefix(tt.want, "[") + "]:22"; strings.Contains(tt.want, ":") && h.Addr() != want {
				t.Errorf("Addr() = %q, want %q", h.Addr(), want)
			}
		})
	}
}

// response builds an mDNS response for instance as zeroconf's responder
// does (PTR answer; SRV, TXT and addresses as additional records).
func response(instance, host string, port uint16, ttl uint32, txt []string, addrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.Response, m.Authoritative = true, true
	full := instance + "." + serviceName
	m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: serviceName, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: full})
	m.Extra = append(m.Extra,
		&dns.SRV{Hdr: dns.RR_Header{Name: full, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl}, Port: port, Target: host},
		&dns.TXT{Hdr: dns.RR_Header{Name: full, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl}, Txt: txt})
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip.To4() != nil {
			m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: host, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: ip})
		} else {
			m.Extra = append(m.Extra, &dns.AAAA{Hdr: dns.RR_Header{Name: host, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: ip})
		}
	}
	return m
}

// wire packs and unpacks m, as if it had crossed the network.
func wire(t testing.TB, m *dns.Msg) *dns.Msg {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var out dns.Msg
	if err := out.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestEntriesFromMsg(t *testing.T) {
	m := response(`nas\.home`, "messor-nas-home.local.", 2290, 120, formatTXT(fpA), "10.0.0.1", "fe80::1")
	// Another agent in the same message, other records that must be ignored.
	other := response("beta", "BETA.local.", 2291, 120, formatTXT(fpB), "10.0.0.2")
	m.Answer = append(m.Answer, other.Answer...)
	m.Extra = append(m.Extra, other.Extra...)
	m.Answer = append(m.Answer,
		&dns.PTR{Hdr: dns.RR_Header{Name: "_http._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 120}, Ptr: "web._http._tcp.local."},
		&dns.SRV{Hdr: dns.RR_Header{Name: "web._http._tcp.local.", Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 120}, Port: 80, Target: "messor-nas-home.local."},
		&dns.A{Hdr: dns.RR_Header{Name: "unrelated.local.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 120}, A: net.ParseIP("10.0.0.99")},
		&dns.SRV{Hdr: dns.RR_Header{Name: "_messor._tcp.local.", Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 120}, Port: 1, Target: "x.local."},
	)
	// Case differs on the wire: DNS names are case-insensitive.
	m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "beta.LOCAL.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 120}, A: net.ParseIP("10.0.0.3")})

	got := entriesFromMsg(wire(t, m))
	if len(got) != 2 {
		t.Fatalf("got %d entries, want 2: %+v", len(got), got)
	}
	h, err := parseEntry(got[0].entry)
	if err != nil || h.Name != "nas.home" || h.HostName != "10.0.0.1" || h.Port != 2290 || h.Fingerprint != fpA || got[0].goodbye {
		t.Errorf("first: %+v, %v, goodbye %v", h, err, got[0].goodbye)
	}
	if len(got[0].entry.AddrIPv6) != 1 {
		t.Errorf("first: IPv6 %v", got[0].entry.AddrIPv6)
	}
	h, err = parseEntry(got[1].entry)
	if err != nil || h.Name != "beta" || h.Port != 2291 || h.Fingerprint != fpB {
		t.Errorf("second: %+v, %v", h, err)
	}
	if n := len(got[1].entry.AddrIPv4); n != 2 {
		t.Errorf("second: addresses %v, want 10.0.0.2 and 10.0.0.3", got[1].entry.AddrIPv4)
	}

	bye := entriesFromMsg(wire(t, response("beta", "beta.local.", 2291, 0, formatTXT(fpB), "10.0.0.2")))
	if len(bye) != 1 || !bye[0].goodbye {
		t.Errorf("goodbye: %+v", bye)
	}
}

// FuzzEntriesFromMsg throws arbitrary packets at the whole receive path.
func FuzzEntriesFromMsg(f *testing.F) {
	for _, m := range []*dns.Msg{
		response("alpha", "messor-alpha.local.", 2290, 120, formatTXT(fpA), "10.0.0.1", "fe80::1"),
		response(`a\.b`, "h.local.", 1, 0, []string{"v=1", "fp="}, "10.0.0.1"),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m dns.Msg
		if m.Unpack(b) != nil {
			return
		}
		c := newCollector(slog.New(slog.DiscardHandler))
		pi := packetInfo{ifName: "eth0", src: mustAddr("fe80::1"), ifNets: []netip.Prefix{mustPrefix("10.0.0.0/8")}}
		for _, eo := range entriesFromMsg(&m) {
			c.add(eo, pi)
		}
		hosts, errs := c.result()
		for _, h := range hosts {
			if err := protocol.CheckHostName(h.Name); err != nil || h.Port < 1 || h.Port > 65535 || checkFingerprint(h.Fingerprint) != nil {
				t.Fatalf("accepted bad host %+v", h)
			}
		}
		for _, err := range errs {
			var dup *DuplicateNameError
			if !errors.As(err, &dup) || len(dup.Adverts) < 2 {
				t.Fatalf("bad error %v", err)
			}
		}
	})
}

func TestCollector(t *testing.T) {
	pi := packetInfo{ifName: "eth0", src: mustAddr("10.0.0.1")}
	good := func(fp string) []string { return formatTXT(fp) }
	add := func(c *collector, goodbye bool, e *zeroconf.ServiceEntry, p packetInfo) {
		c.add(entryOf{entry: e, goodbye: goodbye}, p)
	}

	t.Run("many adverts", func(t *testing.T) {
		c := newCollector(slog.New(slog.DiscardHandler))
		const n = 1000
		for i := n - 1; i >= 0; i-- {
			e := entry(fmt.Sprintf("host-%04d", i), 2000+i, good(fpA), fmt.Sprintf("10.%d.%d.1", i/256, i%256))
			add(c, false, e, packetInfo{})
			add(c, false, e, packetInfo{}) // heard twice: still one
		}
		// One of them claimed by a second agent.
		add(c, false, entry("host-0500", 2500, good(fpB), "10.99.0.1"), packetInfo{})
		// Garbage is dropped.
		add(c, false, entry("bad name", 1, good(fpA), "10.0.0.1"), packetInfo{})
		add(c, false, entry("host-x", 0, good(fpA), "10.0.0.1"), packetInfo{})
		hosts, errs := c.result()
		if len(hosts) != n-1 || len(errs) != 1 {
			t.Fatalf("%d hosts, %d errors, want %d, 1", len(hosts), len(errs), n-1)
		}
		for i, h := range hosts {
			if i > 0 && hosts[i-1].Name >= h.Name {
				t.Fatalf("not sorted: %q before %q", hosts[i-1].Name, h.Name)
			}
			if h.Name == "host-0500" {
				t.Fatalf("contested name reported as a host")
			}
		}
		var dup *DuplicateNameError
		if !errors.As(errs[0], &dup) || dup.Name != "host-0500" || len(dup.Adverts) != 2 ||
			dup.Adverts[0].Fingerprint != fpB || dup.Adverts[1].Fingerprint != fpA { // sorted by fingerprint
			t.Fatalf("errs[0] = %v", errs[0])
		}
	})

	t.Run("same agent over IPv4 and IPv6, best address kept", func(t *testing.T) {
		c := newCollector(testLogger(t))
		e := entry("alpha", 22, good(fpA), "fe80::1", "10.0.0.1")
		e6 := entry("alpha", 22, good(fpA), "fe80::1")
		add(c, false, e6, packetInfo{ifName: "eth0", src: mustAddr("fe80::1")})
		add(c, false, e, pi)
		hosts, errs := c.result()
		if len(errs) != 0 || len(hosts) != 1 || hosts[0].HostName != "10.0.0.1" {
			t.Fatalf("hosts %+v errs %v", hosts, errs)
		}
	})

	for _, tt := range []struct {
		name   string
		second *zeroconf.ServiceEntry
		dup    bool
	}{
		{"other fingerprint", entry("alpha", 22, good(fpB), "10.0.0.1"), true},
		{"other port", entry("alpha", 23, good(fpA), "10.0.0.1"), true},
		{"other addresses", entry("alpha", 22, good(fpA), "10.0.0.2"), true},
		{"overlapping addresses", entry("alpha", 22, good(fpA), "10.0.0.2", "10.0.0.1"), false},
		{"other name", entry("beta", 22, good(fpB), "10.0.0.1"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCollector(testLogger(t))
			add(c, false, entry("alpha", 22, good(fpA), "10.0.0.1"), pi)
			add(c, false, tt.second, pi)
			_, errs := c.result()
			if (len(errs) == 1) != tt.dup || len(errs) > 1 {
				t.Fatalf("errs = %v, want duplicate: %v", errs, tt.dup)
			}
		})
	}

	t.Run("goodbye", func(t *testing.T) {
		c := newCollector(testLogger(t))
		add(c, false, entry("alpha", 22, good(fpA), "10.0.0.1"), pi)
		add(c, false, entry("alpha", 22, good(fpC), "10.0.0.3"), pi)
		add(c, true, entry("alpha", 22, good(fpC), "10.0.0.3"), pi)
		hosts, errs := c.result()
		if len(errs) != 0 || len(hosts) != 1 || hosts[0].Fingerprint != fpA {
			t.Fatalf("after one goodbye: hosts %+v errs %v", hosts, errs)
		}
		// A goodbye too broken to identify the agent forgets the name.
		add(c, true, entry("alpha", 22, nil), pi)
		if hosts, errs := c.result(); len(hosts)+len(errs) != 0 {
			t.Fatalf("after anonymous goodbye: hosts %+v errs %v", hosts, errs)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		c := newCollector(slog.New(slog.DiscardHandler))
		for i := 0; i < maxAdverts+100; i++ {
			add(c, false, entry(fmt.Sprintf("h%d", i), 22, good(fpA), "10.0.0.1"), pi)
		}
		if hosts, _ := c.result(); len(hosts) != maxAdverts {
			t.Fatalf("%d hosts kept, want %d", len(hosts), maxAdverts)
		}
	})
}

func TestDuplicateNameError(t *testing.T) {
	err := error(&DuplicateNameError{Name: "alpha", Adverts: []Host{
		{Name: "alpha", HostName: "10.0.0.1", Port: 2290, Fingerprint: fpA},
		{Name: "alpha", HostName: "fe80::1%eth0", Port: 2290, Fingerprint: fpC},
	}})
	want := `mDNS: 2 agents advertise the name "alpha": ` + fpA + ` at 10.0.0.1:2290; ` + fpC + ` at [fe80::1%eth0]:2290 (rename one of them)`
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}

// TestAdvertiseRejects checks arguments; every case fails before a socket
// is opened, so nothing is announced on the machine's own network.
func TestAdvertiseRejects(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		a    Advert
		want error
	}{
		{"bad name", Advert{Name: "a b", Port: 22, Fingerprint: fpA}, nil},
		{"empty name", Advert{Name: "", Port: 22, Fingerprint: fpA}, protocol.ErrEmptyName},
		{"64-byte name", Advert{Name: strings.Repeat("a", 64), Port: 22, Fingerprint: fpA}, protocol.ErrTooLong},
		{"trailing dot", Advert{Name: "a.", Port: 22, Fingerprint: fpA}, nil},
		{"port 0", Advert{Name: "a", Port: 0, Fingerprint: fpA}, errPort},
		{"port too big", Advert{Name: "a", Port: 65536, Fingerprint: fpA}, errPort},
		{"no fingerprint", Advert{Name: "a", Port: 22}, errFingerprint},
		{"bad fingerprint", Advert{Name: "a", Port: 22, Fingerprint: "x y"}, errFingerprint},
		{"only loopback", Advert{Name: "a", Port: 22, Fingerprint: fpA, Ifaces: []net.Interface{*lo}}, errNoAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stop, err := Advertise(tt.a)
			if err == nil {
				stop()
				t.Fatal("Advertise succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCheckInstanceName(t *testing.T) {
	for _, name := range []string{"a", "nas.home", "host_1", strings.Repeat("a", 63)} {
		if err := checkInstanceName(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
		if got := unescapeInstance(escapeInstance(name)); got != name {
			t.Errorf("escape round trip %q -> %q", name, got)
		}
		if h := advertHost(name); len(h) > 63 || strings.ContainsAny(h, "._") {
			t.Errorf("advertHost(%q) = %q", name, h)
		}
	}
}

func TestBrowseWindow(t *testing.T) {
	if _, _, err := Browse(t.Context(), 0, nil); err == nil {
		t.Error("Browse with a zero window succeeded")
	}
}

func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// Helper processes. zeroconf's goroutines do not inherit a thread's network
// namespace from setns(2), so advertisers and browsers for the namespace
// test run as copies of this test binary started with "ip netns exec".
const helperEnv = "MESSOR_NETNS_HELPER"

func TestMain(m *testing.M) {
	switch role := os.Getenv(helperEnv); role {
	case "":
		os.Exit(m.Run())
	case "advertise":
		os.Exit(helperAdvertise())
	case "browse":
		os.Exit(helperBrowse())
	case "watch":
		os.Exit(helperWatch())
	case "dial":
		os.Exit(helperDial())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, role)
		os.Exit(2)
	}
}

func helperLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// untilStdinCloses returns a context that ends when stdin reaches EOF, so a
// helper never outlives the test that started it.
func untilStdinCloses() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return ctx
}

// helperAdvertise advertises MESSOR_NAME/PORT/FP, answers TCP connections
// to that port (IPv4 and IPv6) with its name, prints "ready", and withdraws
// the advert when stdin closes.
func helperAdvertise() int {
	name, port := os.Getenv("MESSOR_NAME"), os.Getenv("MESSOR_PORT")
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, name)
			c.Close()
		}
	}()
	p, _ := strconv.Atoi(port)
	stop, err := Advertise(Advert{Name: name, Port: p, Fingerprint: os.Getenv("MESSOR_FP")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "advertise:", err)
		return 1
	}
	fmt.Println("ready")
	<-untilStdinCloses().Done()
	stop()
	return 0
}

// browseResult is what the browse helper prints, as JSON.
type browseResult struct {
	Hosts  []Host
	Dups   []DuplicateNameError
	Others []string
	Err    string
}

// helperBrowse prints "ready", browses for MESSOR_WINDOW and prints a
// browseResult.
func helperBrowse() int {
	window, err := time.ParseDuration(os.Getenv("MESSOR_WINDOW"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	hosts, errs, err := Browse(context.Background(), window, helperLogger())
	res := browseResult{Hosts: hosts}
	if err != nil {
		res.Err = err.Error()
	}
	for _, e := range errs {
		var dup *DuplicateNameError
		if errors.As(e, &dup) {
			res.Dups = append(res.Dups, *dup)
		} else {
			res.Others = append(res.Others, e.Error())
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helperWatch prints "ready", then one JSON Host a line as Watch finds
// them, until stdin closes.
func helperWatch() int {
	fmt.Println("ready")
	enc := json.NewEncoder(os.Stdout)
	err := Watch(untilStdinCloses(), helperLogger(), func(h Host) {
		if err := enc.Encode(h); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	})
	if !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "watch:", err)
		return 1
	}
	return 0
}

// helperDial prints "ready", then the line read from MESSOR_ADDR.
func helperDial() int {
	fmt.Println("ready")
	c, err := net.DialTimeout("tcp", os.Getenv("MESSOR_ADDR"), 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(line)
	return 0
}

// lockedBuffer collects a helper's stderr, or a log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// helperProc is a running helper in a namespace.
type helperProc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line; closed at EOF
	stderr *lockedBuffer
	exited chan error
}

// startHelper starts the test binary as role in node i with env added, and
// waits for its "ready" line. Its stderr (its debug log) is printed if the
// test fails or runs with -v.
func startHelper(t *testing.T, nt *netns.Net, i int, role string, env ...string) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &helperProc{
		name:   fmt.Sprintf("%s in %s %v", role, nt.NS(i), env),
		cmd:    nt.Command(i, exe, "-test.run=^$"),
		lines:  make(chan string, 100),
		stderr: new(lockedBuffer),
		exited: make(chan error, 1),
	}
	p.cmd.Env = append(append(os.Environ(), helperEnv+"="+role), env...)
	p.cmd.Stderr = p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() || testing.Verbose() {
			t.Logf("--- %s: stderr:\n%s", p.name, p.stderr)
		}
	})
	if line := p.line(t, 20*time.Second); line != "ready" {
		t.Fatalf("%s: first line %q, want ready", p.name, line)
	}
	return p
}

// line returns the helper's next stdout line ("" at EOF).
func (p *helperProc) line(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-time.After(timeout):
		t.Fatalf("%s: no output for %v; stderr:\n%s", p.name, timeout, p.stderr)
		return ""
	}
}

// stop closes the helper's stdin and waits for it to exit; it may be
// called more than once.
func (p *helperProc) stop(t *testing.T) {
	t.Helper()
	if p.exited == nil {
		return
	}
	p.stdin.Close()
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s: did not exit after stdin closed", p.name)
		_ = p.cmd.Process.Kill()
	}
	p.exited = nil
}

// browseIn runs one Browse for window in node i and returns its result.
func browseIn(t *testing.T, nt *netns.Net, i int, window time.Duration) browseResult {
	t.Helper()
	return waitBrowse(t, startHelper(t, nt, i, "browse", "MESSOR_WINDOW="+window.String()), window)
}

func waitBrowse(t *testing.T, p *helperProc, window time.Duration) browseResult {
	t.Helper()
	var res browseResult
	if err := json.Unmarshal([]byte(p.line(t, window+20*time.Second)), &res); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	p.stop(t)
	if res.Err != "" || len(res.Others) > 0 {
		t.Fatalf("%s: err %q, other errors %q", p.name, res.Err, res.Others)
	}
	return res
}

// TestMDNSAcrossNamespaces advertises and browses between network
// namespaces joined by a bridge: real multicast through a real kernel,
// never on the machine's own network.
func TestMDNSAcrossNamespaces(t *testing.T) {
	t.Parallel()
	// 0: alpha, 1: beta.lan, 2: browser, 3: a second "alpha", 4: watcher,
	// 5: gamma, with no IPv4 address (its only address is link-local IPv6).
	nt := netns.New(t, 6)
	const window = 2 * time.Second
	agent := func(i int, name string, port int, fp string) Host {
		return Host{Name: name, HostName: nt.IP(i), Port: port, Source: SourceMDNS, Agent: true, Fingerprint: fp}
	}
	alpha, beta, alpha2 := agent(0, "alpha", 2290, fpA), agent(1, "beta.lan", 2291, fpB), agent(3, "alpha", 2292, fpC)
	gamma := agent(5, "gamma", 2293, fpB)
	gamma.HostName = nt.LinkLocal6(5) + "%eth0" // zone: the browser's interface
	if out, err := nt.Command(5, "ip", "-4", "addr", "flush", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("removing IPv4 from node 5: %v: %s", err, out)
	}
	advertise := func(i int, h Host) *helperProc {
		return startHelper(t, nt, i, "advertise", "MESSOR_NAME="+h.Name, "MESSOR_PORT="+strconv.Itoa(h.Port), "MESSOR_FP="+h.Fingerprint)
	}
	watcher := startHelper(t, nt, 4, "watch")
	watched := func(n int) []Host {
		t.Helper()
		var hs []Host
		for range n {
			var h Host
			if err := json.Unmarshal([]byte(watcher.line(t, 20*time.Second)), &h); err != nil {
				t.Fatalf("watch: %v", err)
			}
			hs = append(hs, h)
		}
		slices.SortFunc(hs, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
		return hs
	}

	adA := advertise(0, alpha)
	advertise(1, beta)
	advertise(5, gamma)

	t.Log("three agents, three names")
	res := browseIn(t, nt, 2, window)
	if want := []Host{alpha, beta, gamma}; !reflect.DeepEqual(res.Hosts, want) || len(res.Dups) != 0 {
		t.Fatalf("Browse:\n got %+v, dups %+v\nwant %+v", res.Hosts, res.Dups, want)
	}
	for _, h := range res.Hosts {
		d := startHelper(t, nt, 2, "dial", "MESSOR_ADDR="+h.Addr())
		if got := d.line(t, 20*time.Second); got != h.Name {
			t.Errorf("dialling %s found %q, want %q", h.Addr(), got, h.Name)
		}
		d.stop(t)
	}
	if got, want := watched(3), []Host{alpha, beta, gamma}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Watch:\n got %+v\nwant %+v", got, want)
	}

	t.Log("a second agent takes an existing name")
	adA2 := advertise(3, alpha2)
	res = browseIn(t, nt, 2, window)
	if want := []Host{beta, gamma}; !reflect.DeepEqual(res.Hosts, want) {
		t.Errorf("Browse with a duplicate: hosts\n %+v, want\n %+v", res.Hosts, want)
	}
	wantDup := DuplicateNameError{Name: "alpha", Adverts: []Host{alpha2, alpha}} // sorted by fingerprint
	if len(res.Dups) != 1 || !reflect.DeepEqual(res.Dups[0], wantDup) {
		t.Fatalf("Browse with a duplicate: dups\n %+v, want\n %+v", res.Dups, wantDup)
	}

	t.Log("the second agent leaves during a browse: its goodbye is heard")
	b := startHelper(t, nt, 2, "browse", "MESSOR_WINDOW="+(3*window).String())
	time.Sleep(window) // both have answered the first query by now
	adA2.stop(t)
	res = waitBrowse(t, b, 3*window)
	if want := []Host{alpha, beta, gamma}; !reflect.DeepEqual(res.Hosts, want) || len(res.Dups) != 0 {
		t.Fatalf("Browse after goodbye:\n got %+v, dups %+v\nwant %+v", res.Hosts, res.Dups, want)
	}

	t.Log("the first agent leaves and the name comes back elsewhere: Watch reports it again")
	adA.stop(t)
	advertise(3, alpha2)
	if got, want := watched(1), []Host{alpha2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Watch after the name moved:\n got %+v\nwant %+v", got, want)
	}
}

// TestCollectorFlood: a hostile LAN cannot grow a browse's memory or work
// without bound. Tens of thousands of adverts for one name (each a
// different agent), for one agent (each with new addresses) and for many
// names leave bounded entries, and the comparisons made grow linearly with
// the adverts heard (counted, not timed).
func TestCollectorFlood(t *testing.T) {
	const n = 20_000
	addr := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff) }
	t.Run("one name, many agents", func(t *testing.T) {
		c := newCollector(slog.New(slog.DiscardHandler))
		for i := range n {
			c.add(entryOf{entry: entry("home", 1000+i%50000, formatTXT(fmt.Sprintf("SHA256:fp%d", i)), addr(i))}, packetInfo{})
		}
		if got := len(c.byName["home"]); got > maxAgentsPerName {
			t.Errorf("%d adverts kept for one name, want at most %d", got, maxAgentsPerName)
		}
		if c.work > n*(maxAgentsPerName+1) {
			t.Errorf("%d comparisons for %d adverts: not linear", c.work, n)
		}
		hosts, errs := c.result()
		var dup *DuplicateNameError
		if len(hosts) != 0 || len(errs) != 1 || !errors.As(errs[0], &dup) || dup.Name != "home" {
			t.Fatalf("flooded name: hosts %v, errs %v; want it contested", hosts, errs)
		}
		// The flooder's goodbyes cannot leave one of its adverts
		// uncontested: a flooded name stays in conflict.
		for i := range n - 1 {
			c.add(entryOf{entry: entry("home", 1000+i%50000, formatTXT(fmt.Sprintf("SHA256:fp%d", i)), addr(i)), goodbye: true}, packetInfo{})
		}
		if _, dup, ok := c.lookup("home"); !ok || dup == nil {
			t.Errorf("after goodbyes, lookup(home) = dup %v, ok %v; want still contested", dup, ok)
		}
	})
	t.Run("one agent, ever new addresses", func(t *testing.T) {
		c := newCollector(slog.New(slog.DiscardHandler))
		for i := range n {
			c.add(entryOf{entry: entry("home", 2290, formatTXT(fpA), addr(i), addr(i+1))}, packetInfo{})
		}
		list := c.byName["home"]
		if len(list) > maxAgentsPerName {
			t.Fatalf("%d adverts kept, want at most %d", len(list), maxAgentsPerName)
		}
		for _, a := range list {
			if len(a.addrs) > maxAddrsPerAdvert {
				t.Fatalf("an advert holds %d addresses, want at most %d", len(a.addrs), maxAddrsPerAdvert)
			}
		}
		if c.work > n*(maxAgentsPerName+1)*maxAddrsPerAdvert {
			t.Errorf("%d comparisons for %d adverts: not linear", c.work, n)
		}
	})
	t.Run("many names", func(t *testing.T) {
		c := newCollector(slog.New(slog.DiscardHandler))
		for i := range 3 * n {
			c.add(entryOf{entry: entry(fmt.Sprintf("h%d", i), 22, formatTXT(fpA), addr(i))}, packetInfo{})
			c.add(entryOf{entry: entry(fmt.Sprintf("bad name %d", i), 22, formatTXT(fpA), addr(i))}, packetInfo{})
		}
		if len(c.byName) > maxAdverts || len(c.warned) > maxAdverts+1 {
			t.Errorf("%d names, %d warnings kept, want at most %d", len(c.byName), len(c.warned), maxAdverts)
		}
		if c.work > 3*n*(maxAgentsPerName+1) {
			t.Errorf("%d comparisons for %d adverts: not linear", c.work, 3*n)
		}
	})
}

// TestCollectorFloodPackets is the flood at packet level: wire-format
// responses, as the listener reads them, for one name from ever new agents
// and for ever new names, and one packet stuffed with instances and
// addresses. What is remembered stays bounded; work stays linear.
func TestCollectorFloodPackets(t *testing.T) {
	const n = 20_000
	c := newCollector(slog.New(slog.DiscardHandler))
	adverts := 0
	feed := func(m *dns.Msg) {
		for _, eo := range entriesFromMsg(wire(t, m)) {
			adverts++
			c.add(eo, packetInfo{ifName: "eth0"})
		}
	}
	for i := range n {
		ip := fmt.Sprintf("10.1.%d.%d", i>>8&0xff, i&0xff)
		feed(response("home", "messor-home.local.", uint16(1000+i%60000), 120, formatTXT(fmt.Sprintf("SHA256:fp%d", i)), ip))
		feed(response(fmt.Sprintf("h%d", i), fmt.Sprintf("messor-h%d.local.", i), 2290, 120, formatTXT(fpA), ip))
	}
	stuffed := new(dns.Msg)
	stuffed.Response = true
	for i := range 300 {
		r := response(fmt.Sprintf("s%d", i), fmt.Sprintf("messor-s%d.local.", i), 2290, 120, formatTXT(fpA), fmt.Sprintf("10.2.%d.1", i%256), fmt.Sprintf("10.3.%d.1", i%256))
		stuffed.Answer = append(stuffed.Answer, r.Answer...)
		stuffed.Extra = append(stuffed.Extra, r.Extra...)
	}
	feed(stuffed)
	if len(c.byName) > maxAdverts || len(c.byName["home"]) > maxAgentsPerName {
		t.Errorf("%d names, %d agents for home; want at most %d and %d", len(c.byName), len(c.byName["home"]), maxAdverts, maxAgentsPerName)
	}
	if c.work > adverts*(maxAgentsPerName+1)*maxAddrsPerAdvert {
		t.Errorf("%d comparisons for %d adverts: not linear", c.work, adverts)
	}
	if _, dup, _ := c.lookup("home"); dup == nil {
		t.Error("the flooded name home is not in conflict")
	}
}
