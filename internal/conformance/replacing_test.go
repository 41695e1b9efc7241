package conformance

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/testenv"
	"github.com/messor-sync/messor/protocol"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// startPkgSFTP serves dir with pkg/sftp's plain Server, whose SSH_FXP_RENAME
// is os.Rename: it replaces an existing target (as do several non-OpenSSH
// servers).
func startPkgSFTP(t *testing.T, dir string, keys []ssh.PublicKey) Host {
	return startPkgSFTPAs("")(t, dir, keys)
}

// startPkgSFTPAs is startPkgSFTP with the SSH banner version ("" = Go's).
func startPkgSFTPAs(version string) StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) Host { return startGoSFTP(t, dir, keys, version) }
}

func startGoSFTP(t *testing.T, dir string, keys []ssh.PublicKey, version string) Host {
	return sftptest.Start(t, keys, version, func(ch ssh.Channel) {
		srv, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir))
		if err == nil {
			srv.Serve()
		}
	})
}

// TestTwoVersionsReplacingServer: against a server whose rename replaces,
// two versions of one file must still both arrive (the carrier serialises
// deliveries to one name). Found in review.
func TestTwoVersionsReplacingServer(t *testing.T) {
	t.Parallel()
	TwoVersions(t, SSHD(false), startPkgSFTP)
}

// TestReplacingServerWithOpenSSHBanner: a host whose banner says OpenSSH but
// whose SFTP server's rename replaces (sshd running another Subsystem, an
// appliance with a copied banner): a different file already in the inbox is
// kept, the new one arrives beside it. Found in review.
func TestReplacingServerWithOpenSSHBanner(t *testing.T) {
	t.Parallel()
	e := NewEnv(t, SSHD(false), "alpha")
	e.Start = startPkgSFTPAs("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13")
	e.AddHost("beta", true)
	e.Outbox("alpha", "beta", map[string][]byte{"other.txt": []byte("new content\n"), "small.txt": []byte("s\n")})
	inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
	testenv.WriteTree(t, inbox, map[string][]byte{"other.txt": []byte("old content\n")})
	c := e.Carrier(1<<20, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	MustOK(t, e.Dropoff(c, "beta"))
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{
		"other.txt":     []byte("old content\n"),
		"other (2).txt": []byte("new content\n"),
		"small.txt":     []byte("s\n"),
	})
}
