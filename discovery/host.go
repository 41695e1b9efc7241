package discovery

import (
	"net"
	"strconv"
	"time"
)

// Source says where a Host was learnt.
type Source string

const (
	SourceHostsFile Source = "hosts-file"
	SourceMDNS      Source = "mdns"
	// SourceSSHConfig: a name nobody configured (no hosts-file line, no
	// Host line naming it), resolved only through ~/.ssh/config's wildcard
	// blocks and OpenSSH's defaults. --accept-new does not apply to it.
	SourceSSHConfig Source = "ssh-config"
)

// Host is one host a carrier may visit, with everything needed to dial it.
type Host struct {
	// Name is the host's messor name: the hosts-file entry / ssh alias, or
	// the agent's advertised name. It names outbox/inbox directories.
	Name string
	// HostName and Port are what to dial (ssh_config HostName and Port).
	HostName string
	Port     int
	// User to log in as (ssh_config User; default: the local user).
	User string
	// IdentityFiles are private key files to try after ssh-agent.
	IdentityFiles []string
	// KnownHostsFiles are the known_hosts files to check and (with
	// accept-new) to append to; the first is the one written.
	KnownHostsFiles []string
	// HostKeyAlias, when set, is the name looked up in known_hosts instead
	// of HostName:Port.
	HostKeyAlias string
	// StrictHostKeyChecking as in ssh_config: "yes", "no", "accept-new",
	// "ask" or "" (unset).
	StrictHostKeyChecking string
	// ConnectTimeout bounds the TCP connect and SSH handshake; 0 means the
	// caller's default.
	ConnectTimeout time.Duration
	// Source says where the host was learnt.
	Source Source
	// Fingerprint is the host key fingerprint an mDNS advert claimed
	// (advisory: never trusted by itself).
	Fingerprint string
	// Agent is true when the host advertised itself as a messor agent.
	Agent bool
}

// Addr is the host:port to dial.
func (h Host) Addr() string {
	port := h.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(h.HostName, strconv.Itoa(port))
}

// KnownHostsName is the address under which the host's key is recorded in
// known_hosts: HostKeyAlias if set, else the dialled address.
func (h Host) KnownHostsName() string {
	if h.HostKeyAlias != "" {
		return h.HostKeyAlias
	}
	return h.Addr()
}
