package conformance

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/messor-sync/messor/agent"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// The kinds of host the suite runs against, for other packages' tests too.

type sshdHost struct{ s *sshdtest.Server }

func (h sshdHost) Addr() (string, int)    { return h.s.Host, h.s.Port }
func (h sshdHost) KnownHostsLine() string { return h.s.KnownHostsLine() }
func (h sshdHost) Stop()                  { h.s.Stop() }

// SSHD starts stock OpenSSH sshd hosts; with noExec they offer nothing but
// SFTP (no commands, so no hashing on the host).
func SSHD(noExec bool) StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) Host {
		return sshdHost{sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, NoExec: noExec})}
	}
}

// SSHDRestricted starts stock OpenSSH sshd hosts where the carrier's key
// is authorized as messor key prints it: restrict,command="internal-sftp"
// (no shell, no commands, no forwarding). The -d added here stands in for
// the user's home, where a real host's internal-sftp starts.
func SSHDRestricted(t *testing.T, dir string, keys []ssh.PublicKey) Host {
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf(`restrict,command="internal-sftp -d %s"`, abs)
	return sshdHost{sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, KeyOptions: opts})}
}

type agentHost struct {
	ln     net.Listener
	key    ssh.PublicKey
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (h *agentHost) Addr() (string, int) {
	a := h.ln.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

func (h *agentHost) KnownHostsLine() string {
	host, port := h.Addr()
	return knownhosts.Line([]string{knownhosts.Normalize(fmt.Sprintf("%s:%d", host, port))}, h.key)
}

func (h *agentHost) Stop() {
	h.once.Do(func() {
		h.cancel()
		<-h.done
	})
}

// Agent starts a messor agent (in this process) serving dir/messor.
func Agent(t *testing.T, dir string, keys []ssh.PublicKey) Host {
	return AgentLogging(nil)(t, dir, keys)
}

// AgentLogging starts agents that log to log (nil: nowhere).
func AgentLogging(log *slog.Logger) StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) Host { return startAgent(t, dir, keys, log) }
}

func startAgent(t *testing.T, dir string, keys []ssh.PublicKey, log *slog.Logger) Host {
	cfgDir := t.TempDir()
	var ak strings.Builder
	for _, k := range keys {
		ak.Write(ssh.MarshalAuthorizedKey(k))
	}
	akFile := filepath.Join(cfgDir, "authorized_keys")
	if err := os.WriteFile(akFile, []byte(ak.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Root:               filepath.Join(dir, "messor"),
		Name:               "testagent",
		AuthorizedKeysFile: akFile,
		HostKeyFile:        filepath.Join(cfgDir, "host_key"),
		Logger:             log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &agentHost{ln: ln, key: a.HostKey(), cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- a.Serve(ctx, ln) }()
	t.Cleanup(h.Stop)
	return h
}
