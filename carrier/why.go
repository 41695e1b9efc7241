package carrier

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/messor-sync/messor/discovery"
)

// Why says in a few words why the host could not be reached: what people
// need to tell a typo from a host that is simply away.
func (e *UnreachableError) Why() string {
	var dns *net.DNSError
	switch {
	case errors.Is(e.Err, discovery.ErrNotHeard):
		return "not heard on the LAN"
	case errors.Is(e.Err, context.Canceled):
		return "interrupted"
	case errors.As(e.Err, &dns) && dns.IsNotFound:
		return "no such host"
	case errors.As(e.Err, &dns):
		return "name lookup failed (no network?)"
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(e.Err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(e.Err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(e.Err, os.ErrDeadlineExceeded), errors.Is(e.Err, context.DeadlineExceeded), isTimeout(e.Err):
		return "timed out"
	case errors.Is(e.Err, io.EOF), errors.Is(e.Err, syscall.ECONNRESET):
		return "connection closed during the handshake"
	}
	return e.Err.Error()
}

// NoSuchHost reports whether the host's name resolves nowhere (no
// ~/.ssh/config entry, not in /etc/hosts, and DNS says there is no such
// name): a configuration error, such as a typo in the hosts file, rather
// than a host out of range.
func (r *HostReport) NoSuchHost() bool {
	var ue *UnreachableError
	var dns *net.DNSError
	return errors.As(r.Err, &ue) && errors.As(ue.Err, &dns) && dns.IsNotFound
}

// unreachableSummary is the Summary of a host that could not be reached.
func (r *HostReport) unreachableSummary() string {
	if r.NoSuchHost() {
		return r.Verb + ": " + r.Host + ": no such host: the name has no ~/.ssh/config entry and is not in /etc/hosts or DNS"
	}
	var ue *UnreachableError
	errors.As(r.Err, &ue)
	return r.Verb + ": " + r.Host + ": skipped, not reachable: " + ue.Why()
}
