package discovery

// mDNS: agents advertise themselves with github.com/grandcat/zeroconf;
// carriers browse with a small listener of their own.
//
// Why Browse and Watch do not use zeroconf.Resolver (measured against the
// pinned master version, e4f60f8407b1):
//   - A Resolver hands out the first answer for an instance name and
//     silently drops every later one for the life of the browse (its
//     mainloop keeps a sentEntries map keyed by instance). A second agent
//     using an existing name would be invisible, and which one "wins" would
//     depend on who answered first: the coin toss DESIGN.md rules out.
//   - zeroconf.ServiceEntry carries neither the interface a response came
//     in on nor its source address, so an IPv6 link-local address could not
//     be given the "%iface" zone it needs to be dialled.
//
// The listener below reads the raw mDNS responses (miekg/dns, already a
// dependency of zeroconf) with the receiving interface and source address,
// turns each instance in each response into a *zeroconf.ServiceEntry built
// exactly as zeroconf's own resolver builds them (addresses are taken only
// from the same response as the SRV record naming their host), and parses
// that with parseEntry.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grandcat/zeroconf"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/messor-sync/messor/protocol"
)

// Advert describes the mDNS service a messor agent announces.
type Advert struct {
	// Name is the agent's messor name (the mDNS instance name). It must
	// pass protocol.CheckHostName, be at most 63 bytes (one DNS label) and
	// not end in '.'.
	Name string
	// Port is the agent's SSH port.
	Port int
	// Fingerprint is the agent's host key fingerprint as printed by
	// ssh.FingerprintSHA256 ("SHA256:...").
	Fingerprint string
	// Ifaces are the interfaces to announce on and whose addresses are
	// advertised; nil means every interface that is up and multicast-capable.
	Ifaces []net.Interface
}

// maxInstanceLen is the longest instance name that fits one DNS label.
const maxInstanceLen = 63

// maxFingerprintLen bounds a fingerprint read from the network.
const maxFingerprintLen = 128

// maxAdverts bounds the names a browse remembers, so a flood of bogus
// adverts on a hostile LAN cannot grow memory without limit.
const maxAdverts = 4096

// maxAgentsPerName bounds the distinct agents remembered per name: two
// already put the name in conflict. A name claimed by more is "flooded"
// and stays in conflict, goodbyes or not, for the rest of the browse (or
// watch), so a flooder cannot withdraw all but one of its adverts.
// maxAddrsPerAdvert bounds the addresses remembered per agent.
const (
	maxAgentsPerName  = 4
	maxAddrsPerAdvert = 16
)

// serviceName is the DNS-SD service name browsed and advertised.
const serviceName = protocol.ServiceType + "." + protocol.Domain

// Errors found in adverts (wrapped; match them with errors.Is).
var (
	errTXT         = errors.New("malformed TXT record")
	errVersion     = errors.New("unsupported protocol version")
	errFingerprint = errors.New("bad fingerprint")
	errPort        = errors.New("bad port")
	errNoAddress   = errors.New("no usable address")
)

// Advertise registers instance a.Name of protocol.ServiceType in
// protocol.Domain, with the TXT strings "v=<protocol.Version>" and
// "fp=<a.Fingerprint>", answering on a.Ifaces. The SRV record names the
// host "messor-<name>.local." rather than the machine's own host name, so
// the advert never contradicts the address records the system's own mDNS
// responder (avahi, systemd-resolved) publishes for that name.
//
// stop withdraws the advert: zeroconf's Shutdown multicasts goodbye packets
// (TTL 0) and closes its sockets. stop may be called more than once and
// from any goroutine. zeroconf's announcement goroutine may outlive stop
// by up to three seconds (it only sleeps and then fails to send).
func Advertise(a Advert) (stop func(), err error) {
	if err := checkInstanceName(a.Name); err != nil {
		return nil, fmt.Errorf("mDNS advert: %w", err)
	}
	if a.Port < 1 || a.Port > 65535 {
		return nil, fmt.Errorf("mDNS advert %q: port %d: %w", a.Name, a.Port, errPort)
	}
	if err := checkFingerprint(a.Fingerprint); err != nil {
		return nil, fmt.Errorf("mDNS advert %q: %w", a.Name, err)
	}
	ifaces := a.Ifaces
	if len(ifaces) == 0 {
		if ifaces, err = multicastInterfaces(); err != nil {
			return nil, fmt.Errorf("mDNS advert %q: %w", a.Name, err)
		}
	}
	var ips []string
	for _, ifi := range ifaces {
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("mDNS advert %q: addresses of %s: %w", a.Name, ifi.Name, err)
		}
		for _, ad := range addrs {
			ipn, ok := ad.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && usableAddr(ip.Unmap()) {
				ips = append(ips, ip.Unmap().String())
			}
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("mDNS advert %q: %w on %s", a.Name, errNoAddress, ifaceNames(ifaces))
	}
	srv, err := zeroconf.RegisterProxy(escapeInstance(a.Name), protocol.ServiceType, protocol.Domain,
		a.Port, advertHost(a.Name), ips, formatTXT(a.Fingerprint), ifaces)
	if err != nil {
		return nil, fmt.Errorf("mDNS advert %q: %w", a.Name, err)
	}
	var once sync.Once
	return func() { once.Do(srv.Shutdown) }, nil
}

// advertHost is the (single label) host name an agent's SRV record names.
func advertHost(name string) string {
	h := "messor-" + strings.NewReplacer(".", "-", "_", "-").Replace(name)
	h = strings.TrimRight(h[:min(len(h), maxInstanceLen)], "-")
	return h // zeroconf appends ".local."
}

// checkInstanceName checks a name for use as an mDNS instance: a valid
// host name that fits one DNS label and survives zeroconf, which trims
// dots from both ends of instance names.
func checkInstanceName(name string) error {
	if err := protocol.CheckHostName(name); err != nil {
		return err
	}
	if len(name) > maxInstanceLen {
		return fmt.Errorf("name %q: longer than %d bytes, the limit of an mDNS instance name: %w",
			name, maxInstanceLen, protocol.ErrTooLong)
	}
	if strings.HasSuffix(name, ".") {
		return fmt.Errorf("name %q: an mDNS instance name must not end in '.'", name)
	}
	return nil
}

// escapeInstance writes a name's dots as "\." so the whole name is one DNS
// label (RFC 6763 section 4.3), as miekg/dns expects in presentation format.
func escapeInstance(name string) string { return strings.ReplaceAll(name, ".", `\.`) }

// unescapeInstance undoes escapeInstance. Any other escape is left alone,
// and CheckHostName then rejects the backslash.
func unescapeInstance(s string) string { return strings.ReplaceAll(s, `\.`, ".") }

// formatTXT is the TXT record of an agent with fingerprint fp.
func formatTXT(fp string) []string {
	return []string{protocol.TxtVersion + "=" + protocol.Version, protocol.TxtFingerprint + "=" + fp}
}

// parseTXT checks the TXT strings of an advert (in miekg/dns presentation
// form, as in zeroconf.ServiceEntry.Text) and returns the fingerprint. Keys
// are case-insensitive (RFC 6763 section 6.4); unknown keys and strings
// with an empty key are ignored; "v" must equal protocol.Version; "fp" must
// be a plausible fingerprint; a key of ours given twice with different
// values, or without "=", makes the record malformed.
func parseTXT(txt []string) (fingerprint string, err error) {
	var version, fp string
	var haveV, haveFP bool
	for _, s := range txt {
		key, val, hasEq := strings.Cut(s, "=")
		if key == "" {
			continue
		}
		var dst *string
		var have *bool
		switch strings.ToLower(key) {
		case protocol.TxtVersion:
			dst, have = &version, &haveV
		case protocol.TxtFingerprint:
			dst, have = &fp, &haveFP
		default:
			continue
		}
		if !hasEq {
			return "", fmt.Errorf("%w: key %q without a value", errTXT, key)
		}
		if *have && *dst != val {
			return "", fmt.Errorf("%w: key %q given twice (%.40q, %.40q)", errTXT, key, *dst, val)
		}
		*dst, *have = val, true
	}
	switch {
	case !haveV:
		return "", fmt.Errorf("%w: no %q key", errTXT, protocol.TxtVersion)
	case version != protocol.Version:
		return "", fmt.Errorf("%w: %.40q, want %q", errVersion, version, protocol.Version)
	case !haveFP:
		return "", fmt.Errorf("%w: no %q key", errTXT, protocol.TxtFingerprint)
	}
	if err := checkFingerprint(fp); err != nil {
		return "", err
	}
	return fp, nil
}

// checkFingerprint accepts 1 to maxFingerprintLen printable ASCII
// characters other than space, '"' and '\\'. (Advisory only: a fingerprint
// from the LAN is compared with known_hosts, never trusted.)
func checkFingerprint(fp string) error {
	if fp == "" {
		return fmt.Errorf("%w: empty", errFingerprint)
	}
	if len(fp) > maxFingerprintLen {
		return fmt.Errorf("%w: %.40q...: longer than %d bytes", errFingerprint, fp, maxFingerprintLen)
	}
	for i := 0; i < len(fp); i++ {
		if c := fp[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return fmt.Errorf("%w: %q: only printable ASCII without spaces, quotes or backslashes", errFingerprint, fp)
		}
	}
	return nil
}

// usableAddr reports whether an advertised address can be dialled at all:
// not unspecified, loopback (which would make the carrier dial itself),
// multicast or broadcast.
func usableAddr(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsMulticast() &&
		ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// packetInfo is what the listener knows about where a response came from.
// The zero value means "unknown" (as for a bare zeroconf.ServiceEntry).
type packetInfo struct {
	src    netip.Addr     // source address of the datagram
	ifName string         // receiving interface; the zone for link-local IPv6
	ifNets []netip.Prefix // the receiving interface's own prefixes
}

// parseEntry checks one advert and returns it as a Host: Name is the
// instance, HostName one of the advertised addresses (IPv4 first), Port,
// Source SourceMDNS, Agent true and the Fingerprint from the TXT record.
// Without knowing the interface the advert arrived on, an IPv6 link-local
// address cannot be given a zone, so it is not used; Browse and Watch know
// the interface and use it.
func parseEntry(e *zeroconf.ServiceEntry) (Host, error) {
	h, _, _, err := parseEntryFrom(e, packetInfo{})
	return h, err
}

// parseEntryFrom is parseEntry with knowledge of the packet: it also
// returns the advertised usable addresses (sorted, zone-free: what
// identifies the agent) and how good the chosen HostName is (higher is
// better).
func parseEntryFrom(e *zeroconf.ServiceEntry, pi packetInfo) (h Host, addrs []netip.Addr, score int, err error) {
	name := unescapeInstance(e.Instance)
	if err := protocol.CheckHostName(name); err != nil {
		return Host{}, nil, 0, fmt.Errorf("mDNS advert: %w", err)
	}
	fp, err := parseTXT(e.Text)
	if err != nil {
		return Host{}, nil, 0, fmt.Errorf("mDNS advert %q: %w", name, err)
	}
	if e.Port < 1 || e.Port > 65535 {
		return Host{}, nil, 0, fmt.Errorf("mDNS advert %q: port %d: %w", name, e.Port, errPort)
	}
	var best netip.Addr
	bestScore := 0
	for _, raw := range slices.Concat(e.AddrIPv4, e.AddrIPv6) {
		ip, ok := netip.AddrFromSlice(raw)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !usableAddr(ip) || slices.Contains(addrs, ip) {
			continue
		}
		addrs = append(addrs, ip)
		s := addrScore(ip, pi)
		if s > bestScore {
			best, bestScore = ip, s
		}
	}
	if bestScore == 0 {
		return Host{}, nil, 0, fmt.Errorf("mDNS advert %q: %w among %d IPv4 and %d IPv6 addresses (IPv6 link-local needs the receiving interface)",
			name, errNoAddress, len(e.AddrIPv4), len(e.AddrIPv6))
	}
	if best.Is6() && best.IsLinkLocalUnicast() {
		best = best.WithZone(pi.ifName)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return Host{
		Name:        name,
		HostName:    best.String(),
		Port:        e.Port,
		Source:      SourceMDNS,
		Agent:       true,
		Fingerprint: fp,
	}, addrs, bestScore, nil
}

// addrScore ranks an advertised address as a HostName: 0 = unusable. IPv4
// beats IPv6, and within each the packet's own source address beats one on
// the receiving interface's subnet, which beats any other. An IPv6
// link-local address is usable only with the receiving interface as zone.
func addrScore(ip netip.Addr, pi packetInfo) int {
	s := 0
	switch {
	case ip.Is4():
		s = 100
	case ip.IsLinkLocalUnicast():
		if pi.ifName == "" {
			return 0
		}
		s = 10
	default:
		s = 50
	}
	switch {
	case ip == pi.src.WithZone(""):
		s += 3
	case slices.ContainsFunc(pi.ifNets, func(p netip.Prefix) bool { return p.Contains(ip) }):
		s += 2
	}
	return s
}

// entryOf is one instance found in one mDNS response.
type entryOf struct {
	entry   *zeroconf.ServiceEntry
	goodbye bool // some record of the instance had TTL 0: it is leaving
}

// entriesFromMsg collects the instances of our service type that one mDNS
// response describes, the way zeroconf's resolver does: PTR, SRV and TXT
// records by instance, then A/AAAA records of the SRV target from the same
// message. Instance names are in miekg/dns presentation form.
func entriesFromMsg(msg *dns.Msg) []entryOf {
	byKey := map[string]*entryOf{}
	var order []string
	get := func(owner string) *entryOf {
		inst, ok := instanceOf(owner)
		if !ok {
			return nil
		}
		k := strings.ToLower(inst)
		if e, ok := byKey[k]; ok {
			return e
		}
		e := &entryOf{entry: zeroconf.NewServiceEntry(inst, protocol.ServiceType, protocol.Domain)}
		byKey[k] = e
		order = append(order, k)
		return e
	}
	sections := slices.Concat(msg.Answer, msg.Ns, msg.Extra)
	for _, rr := range sections {
		var e *entryOf
		switch rr := rr.(type) {
		case *dns.PTR:
			if !strings.EqualFold(rr.Hdr.Name, serviceName) {
				continue
			}
			if e = get(rr.Ptr); e == nil {
				continue
			}
		case *dns.SRV:
			if e = get(rr.Hdr.Name); e == nil {
				continue
			}
			e.entry.HostName = rr.Target
			e.entry.Port = int(rr.Port)
		case *dns.TXT:
			if e = get(rr.Hdr.Name); e == nil {
				continue
			}
			e.entry.Text = rr.Txt
		default:
			continue
		}
		e.entry.TTL = rr.Header().Ttl
		if rr.Header().Ttl == 0 {
			e.goodbye = true
		}
	}
	// Instances by SRV target, so each address record is matched in one
	// look-up (a packet full of records costs linear work).
	byTarget := map[string][]*zeroconf.ServiceEntry{}
	for _, k := range order {
		if e := byKey[k].entry; e.HostName != "" {
			t := strings.ToLower(e.HostName)
			byTarget[t] = append(byTarget[t], e)
		}
	}
	for _, rr := range sections {
		switch rr := rr.(type) {
		case *dns.A:
			for _, e := range byTarget[strings.ToLower(rr.Hdr.Name)] {
				e.AddrIPv4 = append(e.AddrIPv4, rr.A)
			}
		case *dns.AAAA:
			for _, e := range byTarget[strings.ToLower(rr.Hdr.Name)] {
				e.AddrIPv6 = append(e.AddrIPv6, rr.AAAA)
			}
		}
	}
	out := make([]entryOf, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

// instanceOf returns the instance part of "<instance>._messor._tcp.local.".
func instanceOf(owner string) (string, bool) {
	if len(owner) <= len(serviceName)+1 {
		return "", false
	}
	cut := len(owner) - len(serviceName)
	if owner[cut-1] != '.' || !strings.EqualFold(owner[cut:], serviceName) {
		return "", false
	}
	return owner[:cut-1], true
}

// DuplicateNameError reports a name advertised by more than one agent
// (different fingerprints, ports or addresses). Neither is reported as a
// Host: two agents with one name are a clear error, not a coin toss.
type DuplicateNameError struct {
	Name string
	// Adverts are the conflicting adverts as heard, sorted by fingerprint,
	// port and address.
	Adverts []Host
}

func (e *DuplicateNameError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mDNS: %d agents advertise the name %q:", len(e.Adverts), e.Name)
	for i, h := range e.Adverts {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s at %s", h.Fingerprint, h.Addr())
	}
	b.WriteString(" (rename one of them)")
	return b.String()
}

// advert is one agent heard claiming a name.
type advert struct {
	host  Host
	addrs []netip.Addr // advertised usable addresses, sorted, no zones
	score int          // quality of host.HostName, see addrScore
}

// sameAgent reports whether two adverts for one name come from the same
// agent: same fingerprint, same port, and at least one address in common
// (an agent heard on two interfaces, or over IPv4 and IPv6, must not be
// taken for two).
func (a *advert) sameAgent(b *advert) bool {
	if a.host.Fingerprint != b.host.Fingerprint || a.host.Port != b.host.Port {
		return false
	}
	for _, x := range a.addrs {
		if _, ok := slices.BinarySearchFunc(b.addrs, x, netip.Addr.Compare); ok {
			return true
		}
	}
	return false
}

// collector gathers the adverts heard during a browse. It is not safe for
// concurrent use.
type collector struct {
	log     *slog.Logger
	byName  map[string][]*advert // distinct agents per name
	flooded map[string]bool      // names claimed by more than maxAgentsPerName agents
	warned  map[string]bool      // bad adverts already logged
	work    int                  // comparisons made, for tests of linear work
}

func newCollector(log *slog.Logger) *collector {
	return &collector{log: log, byName: map[string][]*advert{}, flooded: map[string]bool{}, warned: map[string]bool{}}
}

// add records one entry heard in a packet and returns the name it concerns
// ("" if the entry was dropped).
func (c *collector) add(eo entryOf, pi packetInfo) string {
	h, addrs, score, err := parseEntryFrom(eo.entry, pi)
	if err != nil {
		if eo.goodbye {
			// A goodbye for a name we could not parse: forget the name.
			name := unescapeInstance(eo.entry.Instance)
			if _, ok := c.byName[name]; ok && !c.flooded[name] {
				delete(c.byName, name)
				return name
			}
			return ""
		}
		if key := err.Error(); !c.warned[key] && len(c.warned) < maxAdverts {
			c.warned[key] = true
			c.log.Warn("mDNS: ignoring advert", "instance", eo.entry.Instance, "from", pi.src, "err", err)
		}
		return ""
	}
	a := &advert{host: h, addrs: addrs[:min(len(addrs), maxAddrsPerAdvert)], score: score}
	list := c.byName[h.Name]
	i := slices.IndexFunc(list, func(b *advert) bool { c.work++; return a.sameAgent(b) })
	if eo.goodbye && c.flooded[h.Name] {
		return ""
	}
	if eo.goodbye {
		if i >= 0 {
			list = slices.Delete(list, i, i+1)
		}
		if len(list) == 0 {
			delete(c.byName, h.Name)
		} else {
			c.byName[h.Name] = list
		}
		c.log.Debug("mDNS: agent left", "host", h.Name, "addr", h.Addr())
		return h.Name
	}
	if i < 0 {
		if list == nil && len(c.byName) >= maxAdverts {
			if !c.warned["\x00full"] {
				c.warned["\x00full"] = true
				c.log.Warn("mDNS: too many adverts, ignoring the rest", "limit", maxAdverts)
			}
			return ""
		}
		if len(list) >= maxAgentsPerName {
			if !c.flooded[h.Name] {
				c.flooded[h.Name] = true
				c.log.Warn("mDNS: too many agents claim one name, ignoring the rest", "host", h.Name, "limit", maxAgentsPerName)
			}
			return ""
		}
		c.byName[h.Name] = append(list, a)
		c.log.Debug("mDNS: agent heard", "host", h.Name, "addr", h.Addr(), "fingerprint", h.Fingerprint)
		return h.Name
	}
	old := list[i]
	grown := false
	for _, x := range a.addrs {
		c.work++
		if _, ok := slices.BinarySearchFunc(old.addrs, x, netip.Addr.Compare); !ok && len(old.addrs) < maxAddrsPerAdvert {
			old.addrs, grown = append(old.addrs, x), true
		}
	}
	if grown {
		slices.SortFunc(old.addrs, netip.Addr.Compare)
	}
	if score > old.score {
		old.host, old.score = h, score
	}
	return h.Name
}

// lookup returns the one agent advertising name, or a *DuplicateNameError
// when there are several; ok is false when there is none.
func (c *collector) lookup(name string) (h Host, dup error, ok bool) {
	list := c.byName[name]
	switch {
	case len(list) == 0:
		return Host{}, nil, false
	case len(list) == 1 && !c.flooded[name]:
		return list[0].host, nil, true
	}
	e := &DuplicateNameError{Name: name}
	for _, a := range list {
		e.Adverts = append(e.Adverts, a.host)
	}
	slices.SortFunc(e.Adverts, func(a, b Host) int {
		return cmp.Or(cmp.Compare(a.Fingerprint, b.Fingerprint), cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.HostName, b.HostName))
	})
	return Host{}, e, true
}

// result returns one Host per name advertised by exactly one agent, and a
// *DuplicateNameError per name advertised by several, both sorted by name.
func (c *collector) result() (hosts []Host, errs []error) {
	names := make([]string, 0, len(c.byName))
	for n := range c.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		h, dup, _ := c.lookup(n)
		if dup != nil {
			errs = append(errs, dup)
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts, errs
}

// errWindowEnded is the cause of Browse's own timeout.
var errWindowEnded = errors.New("browse window ended")

// Browse listens for messor agents for window (or until ctx is done,
// whichever comes first), querying at the start and again after 1s, 2s, 4s
// ... within the window, and also taking unsolicited announcements. It
// returns one Host per name, sorted by name: Name = instance, HostName =
// an advertised address (IPv4 first; among several, the packet's source
// address, then one on the receiving interface's subnet; an IPv6
// link-local address gets the receiving interface as zone, "fe80::1%eth0"),
// Port, Source = SourceMDNS, Agent = true, Fingerprint from TXT. User,
// IdentityFiles and KnownHostsFiles are left for the caller.
//
// Adverts with a bad name, a wrong or missing version, a malformed TXT
// record, port 0 or no usable address are dropped and logged (log may be
// nil). A name advertised by agents that differ in fingerprint, port or
// addresses is returned as a *DuplicateNameError in errs instead of in
// hosts; an agent that says goodbye during the window is forgotten.
//
// err is non-nil when Browse cannot listen at all, when window is not
// positive, or when ctx ended before the window did (then wrapping
// ctx.Err(), with what was heard so far in hosts and errs).
func Browse(ctx context.Context, window time.Duration, log *slog.Logger) (hosts []Host, errs []error, err error) {
	if window <= 0 {
		return nil, nil, fmt.Errorf("mDNS browse: window %v is not positive", window)
	}
	log = orDiscard(log)
	ctx, cancel := context.WithTimeoutCause(ctx, window, errWindowEnded)
	defer cancel()
	col := newCollector(log)
	err = listenMDNS(ctx, log, func(n int) time.Duration {
		return time.Second << min(n, 30)
	}, func(eo entryOf, pi packetInfo) { col.add(eo, pi) })
	hosts, errs = col.result()
	if errors.Is(context.Cause(ctx), errWindowEnded) {
		err = nil // the normal end, not the caller's context
	}
	if err != nil {
		return hosts, errs, fmt.Errorf("mDNS browse: %w", err)
	}
	return hosts, errs, nil
}

// Watch listens for messor agents until ctx is done and calls found (from
// Watch's goroutine, one call at a time) when a name comes to be
// advertised by exactly one agent: when first heard, and again after that
// agent said goodbye and an agent (perhaps another) advertised the name
// again. Hosts are as in Browse. A second agent claiming a name that is
// already in use is logged as a *DuplicateNameError and not reported; a
// name reported before the conflict cannot be taken back, so callers that
// must not act on a contested name use Browse. Watch re-queries after 1s,
// 2s, 4s ... up to once a minute and picks up interfaces that come up.
// It returns ctx.Err() when ctx ends, or an error if it cannot listen.
func Watch(ctx context.Context, log *slog.Logger, found func(Host)) error {
	log = orDiscard(log)
	col := newCollector(log)
	reported := map[string]Host{}
	conflicted := map[string]bool{}
	err := listenMDNS(ctx, log, func(n int) time.Duration {
		return min(time.Second<<min(n, 30), time.Minute)
	}, func(eo entryOf, pi packetInfo) {
		name := col.add(eo, pi)
		if name == "" {
			return
		}
		h, dup, ok := col.lookup(name)
		switch {
		case !ok:
			delete(reported, name)
			delete(conflicted, name)
		case dup != nil:
			if !conflicted[name] {
				conflicted[name] = true
				log.Error("mDNS: name in conflict", "host", name, "err", dup)
			}
		default:
			delete(conflicted, name)
			old, was := reported[name]
			if was && old.Fingerprint == h.Fingerprint && old.Port == h.Port {
				return // the same agent (its best address may have improved)
			}
			reported[name] = h
			found(h)
		}
	})
	return err
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

var (
	mdnsGroup4 = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	mdnsGroup6 = &net.UDPAddr{IP: net.ParseIP("ff02::fb"), Port: 5353}
)

// multicastInterfaces lists the interfaces that are up and
// multicast-capable (loopback usually is not), as zeroconf does.
func multicastInterfaces() ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			out = append(out, ifi)
		}
	}
	return out, nil
}

func ifaceNames(ifaces []net.Interface) string {
	var names []string
	for _, ifi := range ifaces {
		names = append(names, ifi.Name)
	}
	if len(names) == 0 {
		return "no interfaces"
	}
	return strings.Join(names, ", ")
}

// packet is one datagram read by the listener.
type packet struct {
	data    []byte
	src     *net.UDPAddr
	ifIndex int
}

// mdnsConn is the listener's pair of sockets, bound to port 5353 with
// SO_REUSEADDR (Go does that for a multicast listen address), so it shares
// the port with the system's mDNS responder and with other messor processes.
type mdnsConn struct {
	log    *slog.Logger
	c4     *ipv4.PacketConn
	c6     *ipv6.PacketConn
	joined map[int]bool // interface indexes joined
	ifaces []net.Interface
}

func openMDNS(log *slog.Logger) (*mdnsConn, error) {
	m := &mdnsConn{log: log, joined: map[int]bool{}}
	var err4, err6 error
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(224, 0, 0, 0), Port: 5353}); err != nil {
		err4 = err
	} else {
		m.c4 = ipv4.NewPacketConn(c)
		if err := m.c4.SetControlMessage(ipv4.FlagInterface, true); err != nil {
			log.Debug("mDNS: no IPv4 control messages", "err", err)
		}
		_ = m.c4.SetMulticastTTL(255)
		_ = m.c4.SetMulticastLoopback(true)
	}
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("ff02::"), Port: 5353}); err != nil {
		err6 = err
	} else {
		m.c6 = ipv6.NewPacketConn(c)
		if err := m.c6.SetControlMessage(ipv6.FlagInterface, true); err != nil {
			log.Debug("mDNS: no IPv6 control messages", "err", err)
		}
		_ = m.c6.SetMulticastHopLimit(255)
		_ = m.c6.SetMulticastLoopback(true)
	}
	if m.c4 == nil && m.c6 == nil {
		return nil, fmt.Errorf("listening on port 5353: %w", errors.Join(err4, err6))
	}
	if err6 != nil {
		log.Debug("mDNS: IPv6 unavailable", "err", err6)
	}
	if err := m.refresh(); err != nil {
		m.close()
		return nil, err
	}
	if len(m.joined) == 0 {
		m.close()
		return nil, fmt.Errorf("joining the mDNS group: failed on %s", ifaceNames(m.ifaces))
	}
	return m, nil
}

// refresh joins the mDNS groups on interfaces that came up since last time.
func (m *mdnsConn) refresh() error {
	ifaces, err := multicastInterfaces()
	if err != nil {
		return err
	}
	m.ifaces = ifaces
	for i := range ifaces {
		ifi := &ifaces[i]
		if m.joined[ifi.Index] {
			continue
		}
		var ok bool
		if m.c4 != nil {
			if err := m.c4.JoinGroup(ifi, &net.UDPAddr{IP: mdnsGroup4.IP}); err != nil {
				m.log.Debug("mDNS: cannot join IPv4 group", "iface", ifi.Name, "err", err)
			} else {
				ok = true
			}
		}
		if m.c6 != nil {
			if err := m.c6.JoinGroup(ifi, &net.UDPAddr{IP: mdnsGroup6.IP}); err != nil {
				m.log.Debug("mDNS: cannot join IPv6 group", "iface", ifi.Name, "err", err)
			} else {
				ok = true
			}
		}
		if ok {
			m.joined[ifi.Index] = true
		}
	}
	return nil
}

// query multicasts a PTR question for our service on every interface.
func (m *mdnsConn) query() {
	q := new(dns.Msg)
	q.SetQuestion(serviceName, dns.TypePTR)
	q.RecursionDesired = false
	q.Id = 0 // RFC 6762 section 18.1
	buf, err := q.Pack()
	if err != nil {
		m.log.Error("mDNS: packing query", "err", err)
		return
	}
	for _, ifi := range m.ifaces {
		if !m.joined[ifi.Index] {
			continue
		}
		if m.c4 != nil {
			if _, err := m.c4.WriteTo(buf, &ipv4.ControlMessage{IfIndex: ifi.Index}, mdnsGroup4); err != nil {
				m.log.Debug("mDNS: IPv4 query", "iface", ifi.Name, "err", err)
			}
		}
		if m.c6 != nil {
			if _, err := m.c6.WriteTo(buf, &ipv6.ControlMessage{IfIndex: ifi.Index}, mdnsGroup6); err != nil {
				m.log.Debug("mDNS: IPv6 query", "iface", ifi.Name, "err", err)
			}
		}
	}
}

func (m *mdnsConn) close() {
	if m.c4 != nil {
		m.c4.Close()
	}
	if m.c6 != nil {
		m.c6.Close()
	}
}

// listenMDNS queries now and after every interval(n) (n = 0, 1, ...), and
// hands each of our service's instances in each mDNS response to handle,
// on the calling goroutine, until ctx is done; it returns ctx.Err() then,
// after its reading goroutines have ended.
func listenMDNS(ctx context.Context, log *slog.Logger, interval func(n int) time.Duration, handle func(entryOf, packetInfo)) error {
	m, err := openMDNS(log)
	if err != nil {
		return err
	}
	packets := make(chan packet, 64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	read := func(readFrom func([]byte) (int, int, net.Addr, error)) {
		defer wg.Done()
		for {
			buf := make([]byte, 9000)
			n, ifIndex, src, err := readFrom(buf)
			if err != nil {
				select {
				case <-done:
					return
				default:
				}
				if errors.Is(err, net.ErrClosed) {
					return
				}
				log.Debug("mDNS: read", "err", err)
				continue
			}
			udp, _ := src.(*net.UDPAddr)
			select {
			case packets <- packet{data: buf[:n], src: udp, ifIndex: ifIndex}:
			case <-done:
				return
			}
		}
	}
	if m.c4 != nil {
		wg.Add(1)
		go read(func(b []byte) (int, int, net.Addr, error) {
			n, cm, src, err := m.c4.ReadFrom(b)
			idx := 0
			if cm != nil {
				idx = cm.IfIndex
			}
			return n, idx, src, err
		})
	}
	if m.c6 != nil {
		wg.Add(1)
		go read(func(b []byte) (int, int, net.Addr, error) {
			n, cm, src, err := m.c6.ReadFrom(b)
			idx := 0
			if cm != nil {
				idx = cm.IfIndex
			}
			return n, idx, src, err
		})
	}
	defer func() {
		close(done)
		m.close()
		wg.Wait()
	}()

	ifCache := map[int]packetInfo{}
	m.query()
	timer := time.NewTimer(interval(0))
	defer timer.Stop()
	for n := 1; ; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			if err := m.refresh(); err != nil {
				log.Debug("mDNS: refreshing interfaces", "err", err)
			}
			clear(ifCache)
			m.query()
			timer.Reset(interval(n))
			n++
		case p := <-packets:
			// RFC 6762 section 6: ignore responses not from port 5353.
			if p.src == nil || p.src.Port != 5353 {
				continue
			}
			var msg dns.Msg
			if err := msg.Unpack(p.data); err != nil || !msg.Response {
				continue
			}
			pi := interfaceInfo(ifCache, p.ifIndex)
			pi.src, _ = netip.AddrFromSlice(p.src.IP)
			pi.src = pi.src.Unmap()
			for _, eo := range entriesFromMsg(&msg) {
				handle(eo, pi)
			}
		}
	}
}

// interfaceInfo returns the name and prefixes of interface idx (cached).
func interfaceInfo(cache map[int]packetInfo, idx int) packetInfo {
	if pi, ok := cache[idx]; ok || idx == 0 {
		return pi
	}
	var pi packetInfo
	if ifi, err := net.InterfaceByIndex(idx); err == nil {
		pi.ifName = ifi.Name
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					ones, _ := ipn.Mask.Size()
					if ip.Is4In6() {
						ip = ip.Unmap()
						ones -= 96
					}
					if p, err := ip.Prefix(ones); err == nil {
						pi.ifNets = append(pi.ifNets, p)
					}
				}
			}
		}
	}
	cache[idx] = pi
	return pi
}
