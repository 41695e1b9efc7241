package carrier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
)

// HeldError: a host not visited so as not to spend a metered link. Not a
// failure: the host is visited from a local network, or when allowed.
type HeldError struct {
	Host string
	// Addr is the remote address connected to (Rule "remote"); By what
	// said the connection is metered (Rule "metered").
	Addr, By string
	Rule     string // "remote" or "metered"
}

func (e *HeldError) Error() string {
	if e.Rule == "metered" {
		return fmt.Sprintf("the connection is metered (%s); pass --allow-metered to use it", e.By)
	}
	return fmt.Sprintf("%s is not on a local network (RFC 1918, IPv6 ULA, link-local, loopback; 100.64.0.0/10 counts as remote): mark the host `remote` in the hosts file or pass --allow-remote", e.Addr)
}

// Held reports whether the host was not visited by the network rules.
func (r *HostReport) Held() bool { return r.held() != nil }

func (r *HostReport) held() *HeldError {
	var he *HeldError
	if errors.As(r.Err, &he) {
		return he
	}
	return nil
}

// checkMetered holds every visit on a metered connection, unless allowed.
// Options.Metered is asked at each dial: watch runs for days, across
// networks.
func (c *Carrier) checkMetered(ctx context.Context, h discovery.Host) error {
	if c.opts.Metered == nil || c.opts.AllowMetered {
		return nil
	}
	if m, by := c.opts.Metered(ctx); m {
		return &HeldError{Host: h.Name, By: by, Rule: "metered"}
	}
	return nil
}

// guardNetwork wraps the host key check of h or of one of its hops: the
// TCP address the carrier connected to (after DNS; for a ProxyJump host
// the first hop's, the later hops being reached through it, at an
// unspecified address) must be on a local network, unless h is marked
// remote or AllowRemote. It runs before any byte is moved: the key check
// is the handshake's first decision. A ProxyCommand connection has no
// address messor can see, and is let through: its command chooses the
// route.
func (c *Carrier) guardNetwork(h discovery.Host, check ssh.HostKeyCallback) ssh.HostKeyCallback {
	if c.opts.AllowRemote || h.Remote {
		return check
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if ta, ok := remote.(*net.TCPAddr); ok {
			// No address (a ProxyCommand pipe) or 0.0.0.0 (a later hop)
			// is not checked.
			ip, known := netip.AddrFromSlice(ta.IP)
			ip = ip.Unmap()
			if known && !ip.IsUnspecified() && !c.isLocal(ip) {
				return &HeldError{Host: h.Name, Addr: ta.String(), Rule: "remote"}
			}
		}
		return check(hostname, remote, key)
	}
}

// isLocal is Options.IsLocal, or discovery.LocalAddr.
func (c *Carrier) isLocal(ip netip.Addr) bool {
	if c.opts.IsLocal != nil {
		return c.opts.IsLocal(ip)
	}
	return discovery.LocalAddr(ip)
}
