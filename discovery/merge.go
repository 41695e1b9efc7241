package discovery

import (
	"cmp"
	"slices"
)

// Merge combines the hosts named in the hosts file (already resolved
// through ~/.ssh/config) with the agents heard over mDNS into one Host per
// name.
//
// Hosts-file entries come first, in their order: they are the user's
// explicit configuration, so their dialling details (HostName, Port, User,
// identity and known_hosts files, host key checking) win. When an agent of
// the same name was also heard, the entry keeps those details but takes
// Agent = true and the advertised Fingerprint (advisory only). mDNS-only
// hosts follow, sorted by name. A name given twice in one list keeps its
// first occurrence. The inputs are not modified.
func Merge(fromFile []Host, fromMDNS []Host) []Host {
	mdns := make(map[string]Host, len(fromMDNS))
	for _, h := range fromMDNS {
		if _, dup := mdns[h.Name]; !dup {
			mdns[h.Name] = h
		}
	}
	out := make([]Host, 0, len(fromFile)+len(fromMDNS))
	seen := make(map[string]bool, len(fromFile)+len(fromMDNS))
	for _, h := range fromFile {
		if seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		if m, ok := mdns[h.Name]; ok {
			h.Agent = h.Agent || m.Agent
			if m.Fingerprint != "" {
				h.Fingerprint = m.Fingerprint
			}
		}
		out = append(out, h)
	}
	n := len(out)
	for _, h := range fromMDNS {
		if !seen[h.Name] {
			seen[h.Name] = true
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out[n:], func(a, b Host) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
