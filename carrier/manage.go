package carrier

import (
	"crypto/ed25519"
	"errors"
	"net"
	"os"
	"slices"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/messor-sync/messor/discovery"
)

// Names is what a run knows of destination names; *discovery.Finder
// implements it.
type Names interface {
	// Known reports whether name is in the hosts file, named by a Host
	// line of ~/.ssh/config, or a pinned agent.
	Known(name string) bool
	// Dest resolves name as a dropoff would.
	Dest(name string) (discovery.Host, error)
}

// FlagNeverSeen sets st.NeverSeen: the destinations carried for that are
// not Known and whose host key no known_hosts file of theirs holds, so
// that no run can have visited them (a run refuses a host whose key it
// does not know, unless it pins it). Such a name is most likely a typo in
// an outbox directory: its files would wait in the buffer forever.
func (st *Status) FlagNeverSeen(n Names) {
	st.NeverSeen = nil
	for _, r := range st.Routes {
		if slices.Contains(st.NeverSeen, r.Dest) || n.Known(r.Dest) {
			continue
		}
		if h, err := n.Dest(r.Dest); err == nil && keyKnown(h) {
			continue
		}
		st.NeverSeen = append(st.NeverSeen, r.Dest)
	}
}

// probeKey is a key no host has: asking known_hosts about it answers
// whether any key is recorded for a name.
var probeKey, _ = ssh.NewPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())

// keyKnown reports whether one of h's known_hosts files holds a key for it.
func keyKnown(h discovery.Host) bool {
	var files []string
	for _, f := range h.KnownHostsFiles {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return false
	}
	cb, err := knownhosts.New(files...)
	if err != nil {
		return false
	}
	addr := h.KnownHostsName()
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "22")
	}
	var ke *knownhosts.KeyError
	err = cb(addr, &net.TCPAddr{IP: net.IPv4zero}, probeKey)
	return err == nil || (errors.As(err, &ke) && len(ke.Want) > 0)
}
