package discovery

import (
	"net"
	"strconv"
	"strings"
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
	// Remote: the hosts file marks the host "remote": it may be visited at
	// an address not on a local network (LocalAddr).
	Remote bool
	// ProxyJump is the chain of jump hosts to the host, first hop first
	// (ssh_config ProxyJump), each resolved through ssh_config as a host of
	// its own. As with OpenSSH, only the first hop has a route of its own;
	// each later hop is reached through the one before it.
	ProxyJump []Host
	// ProxyCommand, when set, is a command whose standard input and output
	// are the connection to the host (ssh_config ProxyCommand), with its
	// %-tokens not yet expanded: see ProxyCommandLine.
	ProxyCommand string
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

// Route says how the host is reached, for messages: "direct", "via
// ProxyJump a,b" or "via ProxyCommand".
func (h Host) Route() string {
	switch {
	case h.ProxyCommand != "":
		return "via ProxyCommand"
	case len(h.ProxyJump) > 0:
		names := make([]string, len(h.ProxyJump))
		for i, j := range h.ProxyJump {
			names[i] = j.Name
		}
		return "via ProxyJump " + strings.Join(names, ",")
	}
	return "direct"
}

// ProxyCommandLine is ProxyCommand with OpenSSH's tokens expanded: %h the
// HostName, %p the port, %r the user, %n the messor name, %% a %. A value
// with anything but letters, digits and ._:@+=,/- in it (a name heard
// over mDNS could carry anything) is single-quoted for the shell.
func (h Host) ProxyCommandLine() string {
	port := h.Port
	if port == 0 {
		port = 22
	}
	var b strings.Builder
	cmd := h.ProxyCommand
	for i := 0; i < len(cmd); i++ {
		if cmd[i] != '%' || i+1 == len(cmd) {
			b.WriteByte(cmd[i])
			continue
		}
		i++
		switch cmd[i] {
		case 'h':
			b.WriteString(shellQuote(h.HostName))
		case 'p':
			b.WriteString(strconv.Itoa(port))
		case 'r':
			b.WriteString(shellQuote(h.User))
		case 'n':
			b.WriteString(shellQuote(h.Name))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(cmd[i])
		}
	}
	return b.String()
}

// shellQuote returns s as it is when the shell reads it as one word with
// no special meaning, else single-quoted.
func shellQuote(s string) string {
	safe := s != "" && !strings.HasPrefix(s, "-")
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:@+=,/-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
