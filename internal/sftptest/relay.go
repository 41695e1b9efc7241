package sftptest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
)

// SFTP request types a relay hook sees (draft-ietf-secsh-filexfer-02).
const (
	FxpOpen    = 3
	FxpRead    = 5
	FxpWrite   = 6
	FxpLstat   = 7
	FxpOpendir = 11
	FxpRemove  = 13
	FxpStat    = 17
	FxpRename  = 18
	// FxpExtended is an extension's request, named in Request.Extended.
	FxpExtended = 200
)

// Request is one SFTP request from the client, as a relay hook sees it.
type Request struct {
	Type   byte
	Path   string
	Target string // SSH_FXP_RENAME's new path
	// Extended names an SSH_FXP_EXTENDED request ("fsync@openssh.com").
	Extended string
}

// Hook sees every SFTP request a relay passes on, before the backend does,
// so a test can act at that very moment (change the backend's files). It
// returns true to cut the connection there instead: the request is never
// passed on, as if the client had died just before sending it. A hook may
// block: while it does, that request and the later ones of its channel
// wait, and the connection, its other channels and keepalives go on (an
// SFTP server that stopped answering).
type Hook func(Request) (cut bool)

// StartRelay starts an SSH server that lets keys log in and passes each
// connection on to the SSH server at backend (host:port), logging in there
// as user with signer: sessions (SFTP, exec) and global requests go through
// unchanged, and the client's SFTP requests are shown to hook on the way.
// It presents the backend's SSH version, so a client tells the same kind
// of host.
func StartRelay(t testing.TB, keys []ssh.PublicKey, backend, user string, signer ssh.Signer, hook Hook) *Server {
	t.Helper()
	bcfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey()} // a test's own backend
	probe, err := ssh.Dial("tcp", backend, bcfg)
	if err != nil {
		t.Fatalf("sftptest: relay: backend %s: %v", backend, err)
	}
	version := string(probe.ServerVersion())
	probe.Close()
	return start(t, keys, version, func(c net.Conn, cfg *ssh.ServerConfig) {
		relayConn(c, cfg, backend, bcfg, hook)
	})
}

func relayConn(c net.Conn, cfg *ssh.ServerConfig, backend string, bcfg *ssh.ClientConfig, hook Hook) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	b, err := ssh.Dial("tcp", backend, bcfg)
	if err != nil {
		return
	}
	defer b.Close()
	var once sync.Once
	cut := func() { once.Do(func() { c.Close(); b.Close() }) }
	go func() {
		for r := range reqs {
			ok, payload, _ := b.SendRequest(r.Type, r.WantReply, r.Payload)
			if r.WantReply {
				r.Reply(ok, payload)
			}
		}
	}()
	for nc := range chans {
		bch, breqs, err := b.OpenChannel(nc.ChannelType(), nc.ExtraData())
		if err != nil {
			var oe *ssh.OpenChannelError
			if errors.As(err, &oe) {
				nc.Reject(oe.Reason, oe.Message)
			} else {
				nc.Reject(ssh.ConnectionFailed, err.Error())
			}
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			bch.Close()
			return
		}
		go relayChannel(ch, creqs, bch, breqs, hook, cut)
	}
}

func relayChannel(ch ssh.Channel, creqs <-chan *ssh.Request, bch ssh.Channel, breqs <-chan *ssh.Request, hook Hook, cut func()) {
	var isSFTP atomic.Bool
	go func() {
		for r := range creqs {
			if r.Type == "subsystem" && len(r.Payload) > 4 && string(r.Payload[4:]) == "sftp" {
				isSFTP.Store(true)
			}
			ok, _ := bch.SendRequest(r.Type, r.WantReply, r.Payload)
			if r.WantReply {
				r.Reply(ok, nil)
			}
		}
	}()
	go func() {
		for r := range breqs {
			ok, _ := ch.SendRequest(r.Type, r.WantReply, r.Payload)
			if r.WantReply {
				r.Reply(ok, nil)
			}
		}
	}()
	go func() {
		io.Copy(ch, bch)
		io.Copy(ch.Stderr(), bch.Stderr())
		ch.CloseWrite()
		ch.Close()
	}()
	go func() {
		// Data follows the subsystem request's reply, so isSFTP is set
		// by the time the first byte comes.
		if first := make([]byte, 4); readFull(ch, first) {
			from := io.MultiReader(bytes.NewReader(first), ch)
			if isSFTP.Load() {
				relaySFTP(from, bch, hook, cut) // ends with either side
			} else {
				io.Copy(bch, from)
			}
		}
		bch.CloseWrite()
	}()
}

func readFull(r io.Reader, b []byte) bool { _, err := io.ReadFull(r, b); return err == nil }

// relaySFTP passes SFTP packets from r to w, showing requests to hook.
func relaySFTP(r io.Reader, w io.Writer, hook Hook, cut func()) error {
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		pkt := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(r, pkt); err != nil {
			return err
		}
		if req, ok := parseRequest(pkt); ok && hook(req) {
			cut()
			return errors.New("cut by the hook")
		}
		if _, err := w.Write(append(hdr[:], pkt...)); err != nil {
			return err
		}
	}
}

// parseRequest reads the request type and paths of the packet pkt (type,
// id, then the request's strings).
func parseRequest(pkt []byte) (Request, bool) {
	if len(pkt) < 5 {
		return Request{}, false
	}
	r := Request{Type: pkt[0]}
	switch r.Type {
	case FxpOpen, FxpLstat, FxpOpendir, FxpRemove, FxpStat, FxpRename, FxpExtended:
	default:
		return r, true
	}
	rest := pkt[5:]
	str := func() string {
		if len(rest) < 4 {
			return ""
		}
		n := binary.BigEndian.Uint32(rest)
		if uint64(len(rest)-4) < uint64(n) {
			return ""
		}
		s := string(rest[4 : 4+n])
		rest = rest[4+n:]
		return s
	}
	if r.Type == FxpExtended {
		r.Extended = str()
		return r, true
	}
	r.Path = str()
	if r.Type == FxpRename {
		r.Target = str()
	}
	return r, true
}
