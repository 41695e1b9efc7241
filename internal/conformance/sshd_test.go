package conformance

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// TestOpenSSH runs the suite against stock OpenSSH sshd.
func TestOpenSSH(t *testing.T) {
	t.Parallel()
	Run(t, SSHD(false))
}

// TestOpenSSHNoExec runs it against an sshd that offers nothing but SFTP,
// so every check reads data back instead of hashing on the host.
func TestOpenSSHNoExec(t *testing.T) {
	t.Parallel()
	Run(t, SSHD(true))
}

// TestOpenSSHRestrictedKey runs it against an sshd where the carrier's key
// line is restrict,command="internal-sftp", as messor key prints it: the
// carrier's hash commands get internal-sftp's refusal, so every check
// reads data back, and nothing waits on a command that never answers.
func TestOpenSSHRestrictedKey(t *testing.T) {
	t.Parallel()
	Run(t, SSHDRestricted)
}

// TestRestrictedKeyReadsBack: with the key forced to an SFTP server, the
// in-process internal-sftp (which answers a command with "This service
// allows sftp connections only.") or an external sftp-server (which gets
// end of input and prints nothing), the carrier's hash probe finds no
// hashing and settles on reading back, and a file bigger than the size
// hashed on the host goes both ways intact.
func TestRestrictedKeyReadsBack(t *testing.T) {
	t.Parallel()
	for _, forced := range []string{"internal-sftp", "/usr/lib/openssh/sftp-server"} {
		t.Run(filepath.Base(forced), func(t *testing.T) {
			t.Parallel() // each with its own hosts
			start := func(t *testing.T, dir string, keys []ssh.PublicKey) Host {
				abs, err := filepath.Abs(dir)
				if err != nil {
					t.Fatal(err)
				}
				opts := fmt.Sprintf(`restrict,command="%s -d %s"`, forced, abs)
				return sshdHost{sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, KeyOptions: opts})}
			}
			e := NewEnv(t, start, "alpha", "beta")
			ctx := context.Background()
			signers := func() ([]ssh.Signer, error) { return []ssh.Signer{e.Home.Key}, nil }
			s, err := carrier.Dial(ctx, e.Resolve("alpha")[0], ssh.InsecureIgnoreHostKey(), signers, 60*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if k := s.HashKind(ctx); k != carrier.HashByReadback {
				t.Errorf("hash kind %s with the key forced to %s, want readback", k, forced)
			}
			s.Close()

			big := make([]byte, 3<<20)
			rand.New(rand.NewSource(1)).Read(big)
			files := map[string][]byte{"big.bin": big, "small.txt": []byte("small")}
			e.Outbox("alpha", "beta", files)
			c := e.Carrier(1<<30, carrier.Options{})
			MustOK(t, c.Pickup(ctx, e.Resolve("alpha")))
			MustOK(t, e.Dropoff(c, "beta"))
			SameTree(t, "beta inbox", e.Inbox("beta", "alpha"), files)
		})
	}
}
