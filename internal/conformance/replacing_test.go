package conformance

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/testenv"
	"github.com/messor-sync/messor/protocol"
	"net"
	"path/filepath"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

type goHost struct {
	ln  net.Listener
	key ssh.PublicKey
}

func (h goHost) Addr() (string, int) { return "127.0.0.1", h.ln.Addr().(*net.TCPAddr).Port }
func (h goHost) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(h.ln.Addr().String())}, h.key)
}
func (h goHost) Stop() { h.ln.Close() }

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
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		for _, a := range keys {
			if string(a.Marshal()) == string(k.Marshal()) {
				return nil, nil
			}
		}
		return nil, errors.New("unknown key")
	}}
	cfg.AddHostKey(signer)
	cfg.ServerVersion = version
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					ch, creqs, err := nc.Accept()
					if err != nil {
						return
					}
					go func() {
						for req := range creqs {
							if req.Type == "subsystem" {
								req.Reply(true, nil)
								go func() {
									srv, _ := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir))
									srv.Serve()
									ch.Close()
								}()
								continue
							}
							req.Reply(false, nil)
						}
					}()
				}
			}()
		}
	}()
	return goHost{ln: ln, key: signer.PublicKey()}
}

// TestTwoVersionsReplacingServer: against a server whose rename replaces,
// two versions of one file must still both arrive (the carrier serialises
// deliveries to one name). Found in review.
func TestTwoVersionsReplacingServer(t *testing.T) { TwoVersions(t, startSSHD(false), startPkgSFTP) }

// TestReplacingServerWithOpenSSHBanner: a host whose banner says OpenSSH but
// whose SFTP server's rename replaces (sshd running another Subsystem, an
// appliance with a copied banner): a different file already in the inbox is
// kept, the new one arrives beside it. Found in review.
func TestReplacingServerWithOpenSSHBanner(t *testing.T) {
	e := NewEnv(t, startSSHD(false), "alpha")
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
