package carrier_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

// A host that completes the SSH handshake and accepts the sftp subsystem
// request but whose sftp server never answers (wedged sftp-server, a shell
// rc that blocks): Dial must give up within the connect timeout (found in review).
func TestDialBoundedAfterHandshake(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hs, _ := ssh.NewSignerFromKey(priv)
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(hs)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs) // keepalives are answered
				for nc := range chans {
					_, creqs, _ := nc.Accept()
					go func() {
						for r := range creqs {
							r.Reply(true, nil) // subsystem accepted, then silence
						}
					}()
				}
			}()
		}
	}()
	_, cpriv, _ := ed25519.GenerateKey(rand.Reader)
	cs, _ := ssh.NewSignerFromKey(cpriv)
	h := discovery.Host{Name: "wedged", HostName: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, User: "u"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := carrier.Dial(ctx, h, ssh.InsecureIgnoreHostKey(), func() ([]ssh.Signer, error) { return []ssh.Signer{cs}, nil }, time.Second, nil)
		done <- err
	}()
	select {
	case err := <-done:
		var ue *carrier.UnreachableError
		if !errors.As(err, &ue) {
			t.Errorf("Dial: %v, want an UnreachableError", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Dial still blocked 10s after start (connect timeout 1s, ctx deadline 2s)")
	}
}

// Signers dials SSH_AUTH_SOCK and never closes the connection.
func TestSignersClosesAgentConns(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	kr := agent.NewKeyring()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	kr.Add(agent.AddedKey{PrivateKey: k})
	var open atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			open.Add(1)
			go func() { agent.ServeAgent(kr, c); open.Add(-1) }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	for i := 0; i < 50; i++ {
		signers, done := carrier.Signers(discovery.Host{}, nil)
		ss, err := signers()
		done()
		if err != nil || len(ss) != 1 {
			t.Fatal(len(ss), err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for open.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := open.Load(); n > 0 {
		t.Errorf("%d agent connections still open after 50 calls", n)
	}
}
