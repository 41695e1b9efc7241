package conformance

import (
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sshdtest"
)

type sshdHost struct{ s *sshdtest.Server }

func (h sshdHost) Addr() (string, int)    { return h.s.Host, h.s.Port }
func (h sshdHost) KnownHostsLine() string { return h.s.KnownHostsLine() }
func (h sshdHost) Stop()                  { h.s.Stop() }

func startSSHD(noExec bool) StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) Host {
		return sshdHost{sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, NoExec: noExec})}
	}
}

// TestOpenSSH runs the suite against stock OpenSSH sshd.
func TestOpenSSH(t *testing.T) { Run(t, startSSHD(false)) }

// TestOpenSSHNoExec runs it against an sshd that offers nothing but SFTP,
// so every check reads data back instead of hashing on the host.
func TestOpenSSHNoExec(t *testing.T) { Run(t, startSSHD(true)) }
