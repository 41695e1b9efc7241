// Package sftptest starts an SSH server written in Go for tests that need an
// SFTP server other than OpenSSH's: pkg/sftp's own servers, or a hostile one
// a test builds. Every session may start the "sftp" subsystem, served by a
// function of the test; exec, shell and other channels are refused.
package sftptest

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Server is a running test SSH server.
type Server struct {
	ln  net.Listener
	Key ssh.PublicKey // its host key
}

// Start listens on 127.0.0.1, lets keys log in, presents version as its SSH
// banner ("" for Go's), and calls serve with the channel of every sftp
// subsystem request. It stops when the test ends.
func Start(t testing.TB, keys []ssh.PublicKey, version string, serve func(ch ssh.Channel)) *Server {
	t.Helper()
	return start(t, keys, version, func(c net.Conn, cfg *ssh.ServerConfig) { handle(c, cfg, serve) })
}

// StartWithRequests is Start whose global requests are handed to requests
// (Start's server refuses them all), as a hostile or slow agent answers
// its hash requests.
func StartWithRequests(t testing.TB, keys []ssh.PublicKey, version string, serve func(ch ssh.Channel), requests func(<-chan *ssh.Request)) *Server {
	t.Helper()
	return start(t, keys, version, func(c net.Conn, cfg *ssh.ServerConfig) { handleWith(c, cfg, serve, requests) })
}

// start listens on 127.0.0.1 and hands each connection to conn with the
// server's configuration.
func start(t testing.TB, keys []ssh.PublicKey, version string, conn func(net.Conn, *ssh.ServerConfig)) *Server {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		ServerVersion: version,
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			for _, a := range keys {
				if string(a.Marshal()) == string(k.Marshal()) {
					return nil, nil
				}
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{ln: ln, Key: signer.PublicKey()}
	t.Cleanup(s.Stop)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go conn(c, cfg)
		}
	}()
	return s
}

func handle(c net.Conn, cfg *ssh.ServerConfig, serve func(ssh.Channel)) {
	handleWith(c, cfg, serve, ssh.DiscardRequests)
}

func handleWith(c net.Conn, cfg *ssh.ServerConfig, serve func(ssh.Channel), requests func(<-chan *ssh.Request)) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go requests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			for req := range creqs {
				if req.Type == "subsystem" && len(req.Payload) > 4 && string(req.Payload[4:]) == "sftp" {
					req.Reply(true, nil)
					go func() {
						serve(ch)
						ch.Close()
					}()
					continue
				}
				req.Reply(false, nil) // no exec, no shell
			}
		}()
	}
}

// Addr is where the server listens.
func (s *Server) Addr() (string, int) { return "127.0.0.1", s.ln.Addr().(*net.TCPAddr).Port }

// KnownHostsLine is the server's known_hosts line.
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.ln.Addr().String())}, s.Key)
}

// Stop stops listening; sessions in progress end with their connections.
func (s *Server) Stop() { s.ln.Close() }
