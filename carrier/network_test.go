package carrier

import (
	"errors"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
)

// The address rule checks the TCP address connected to: a later hop of a
// ProxyJump route (reached through the first, at 0.0.0.0:0) and a
// ProxyCommand pipe pass; a remote first hop is held unless allowed.
func TestGuardNetwork(t *testing.T) {
	ok := func(string, net.Addr, ssh.PublicKey) error { return nil }
	c := &Carrier{}
	for _, tc := range []struct {
		addr net.Addr
		held bool
	}{
		{&net.TCPAddr{IP: net.IPv4zero}, false},
		{&net.TCPAddr{IP: net.ParseIP("192.168.1.5"), Port: 22}, false},
		{&net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 22}, false},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 22}, false},
		{&net.TCPAddr{IP: net.ParseIP("100.64.0.1"), Port: 22}, true},
		{&net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 22}, true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 22}, true},
		{&net.UnixAddr{Name: "proxycommand"}, false},
		{&net.TCPAddr{}, false}, // a ProxyCommand pipe as the session sees it
	} {
		err := c.guardNetwork(discovery.Host{Name: "h"}, ok)("h", tc.addr, nil)
		var he *HeldError
		if got := errors.As(err, &he); got != tc.held {
			t.Errorf("%v: held %v, want %v (%v)", tc.addr, got, tc.held, err)
		}
		if err := c.guardNetwork(discovery.Host{Name: "h", Remote: true}, ok)("h", tc.addr, nil); err != nil {
			t.Errorf("%v, host marked remote: %v", tc.addr, err)
		}
	}
}
