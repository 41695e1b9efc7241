// Package e2e holds end-to-end tests that run the real messor binary, built
// once by TestMain from ./cmd/messor, the way people run it: agents and a
// carrier as separate processes, each with its own HOME, in separate Linux
// network namespaces (internal/netns) joined by a bridge, so that mDNS
// discovery and SSH go over a real (virtual) LAN.
//
// The tests must run as root with iproute2's ip(8) installed; they fail
// (never skip) otherwise, because CI runs them. The package has no
// non-test code.
package e2e
