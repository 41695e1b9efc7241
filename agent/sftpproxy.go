package agent

// pkg/sftp's RequestServer (v1.13.12) neither offers nor answers
// fsync@openssh.com, which carriers use to make a delivered partial durable
// before renaming it into place. The SFTP session therefore runs through a
// small packet relay between the SSH channel and the RequestServer. The relay
// passes every packet through, except that it
//
//   - adds fsync@openssh.com (and removes hardlink@openssh.com, which the
//     agent refuses) in the server's SSH_FXP_VERSION;
//   - remembers which handle the server gave each SSH_FXP_OPEN, by path;
//   - hands the permissions an SSH_FXP_OPEN or SSH_FXP_MKDIR asks for to
//     the file system (pkg/sftp's request server drops them);
//   - answers fsync@openssh.com itself: it waits until every request sent
//     before it has been answered (OpenSSH's sftp-server is sequential, so
//     clients may expect the writes before an fsync to be covered by it),
//     then syncs the file open under that handle.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"syscall"
)

// SFTP packet types and constants the relay needs (draft-ietf-secsh-filexfer-02).
const (
	fxpInit     = 1
	fxpVersion  = 2
	fxpOpen     = 3
	fxpClose    = 4
	fxpMkdir    = 14
	fxpStatus   = 101
	fxpHandle   = 102
	fxpExtended = 200

	fxOK               = 0
	fxNoSuchFile       = 2
	fxPermissionDenied = 3
	fxFailure          = 4

	attrSize        = 0x1
	attrUIDGID      = 0x2
	attrPermissions = 0x4

	extFsync    = "fsync@openssh.com"
	extHardlink = "hardlink@openssh.com"

	// maxPacket bounds one SFTP packet. pkg/sftp refuses anything above
	// 256 KiB; the relay only needs to stay bounded.
	maxPacket = 1 << 20
)

var errPacket = errors.New("malformed sftp packet")

// relay connects an SFTP client (the SSH channel) to a request server.
type relay struct {
	fs  *confinedFS
	log *slog.Logger

	wmu    sync.Mutex // serialises whole packets written to the client
	client io.Writer

	mu          sync.Mutex
	cond        *sync.Cond
	nextSeq     uint64
	byID        map[uint32][]uint64 // request id -> sequence numbers in flight
	outstanding map[uint64]struct{}
	done        bool              // the server side has ended
	pendingOpen map[uint32]string // request id of an OPEN -> path
	handles     map[string]string // handle -> path of the file it has open
}

func newRelay(fs *confinedFS, client io.Writer, log *slog.Logger) *relay {
	r := &relay{
		fs:          fs,
		log:         log,
		client:      client,
		byID:        make(map[uint32][]uint64),
		outstanding: make(map[uint64]struct{}),
		pendingOpen: make(map[uint32]string),
		handles:     make(map[string]string),
	}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// readPacket reads one length-prefixed SFTP packet into buf (grown as
// needed) and returns its body: type byte first.
func readPacket(rd io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(rd, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxPacket {
		return nil, fmt.Errorf("sftp packet of %d bytes: %w", n, errPacket)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(rd, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// writePacket writes body with its length prefix, in one write: on the
// SSH channel each write is a packet of its own (encrypted, sent and
// decrypted), on the pipe to the request server a hand-over. The caller
// serialises writers.
func writePacket(w io.Writer, body []byte) error {
	pkt := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(pkt, uint32(len(body)))
	_, err := w.Write(append(pkt, body...))
	return err
}

func (r *relay) writeClient(body []byte) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return writePacket(r.client, body)
}

// sshString decodes an SSH string at the start of b.
func sshString(b []byte) (string, []byte, bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return "", nil, false
	}
	return string(b[4 : 4+n]), b[4+n:], true
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// toServer copies requests from the client to the server, answering fsync
// itself. It returns when either side fails or closes.
func (r *relay) toServer(client io.Reader, server io.Writer) error {
	var buf []byte
	for {
		body, err := readPacket(client, buf)
		if err != nil {
			return err
		}
		buf = body
		typ := body[0]
		if typ == fxpInit {
			if err := writePacket(server, body); err != nil {
				return err
			}
			continue
		}
		if len(body) < 5 {
			return fmt.Errorf("sftp packet type %d: %w", typ, errPacket)
		}
		id := binary.BigEndian.Uint32(body[1:5])
		rest := body[5:]
		switch typ {
		case fxpExtended:
			if name, args, ok := sshString(rest); ok && name == extFsync {
				if err := r.fsync(id, args); err != nil {
					return err
				}
				continue
			}
		case fxpOpen:
			if p, attrs, ok := sshString(rest); ok {
				r.mu.Lock()
				r.pendingOpen[id] = cleanSFTPPath(p)
				r.mu.Unlock()
				if len(attrs) >= 4 {
					r.fs.askMode(p, askedPerm(attrs[4:]))
				}
			}
		case fxpMkdir:
			if p, attrs, ok := sshString(rest); ok {
				r.fs.askMode(p, askedPerm(attrs))
			}
		case fxpClose:
			if h, _, ok := sshString(rest); ok {
				r.mu.Lock()
				delete(r.handles, h)
				r.mu.Unlock()
			}
		}
		r.mu.Lock()
		seq := r.nextSeq
		r.nextSeq++
		r.byID[id] = append(r.byID[id], seq)
		r.outstanding[seq] = struct{}{}
		r.mu.Unlock()
		if err := writePacket(server, body); err != nil {
			return err
		}
	}
}

// toClient copies responses from the server to the client.
func (r *relay) toClient(server io.Reader) error {
	defer func() {
		r.mu.Lock()
		r.done = true
		r.cond.Broadcast()
		r.mu.Unlock()
	}()
	var buf []byte
	for {
		body, err := readPacket(server, buf)
		if err != nil {
			return err
		}
		buf = body
		if body[0] == fxpVersion {
			if err := r.writeClient(rewriteVersion(body)); err != nil {
				return err
			}
			continue
		}
		if len(body) < 5 {
			if err := r.writeClient(body); err != nil {
				return err
			}
			continue
		}
		id := binary.BigEndian.Uint32(body[1:5])
		// Learn the handle before the client can use it...
		r.mu.Lock()
		if p, ok := r.pendingOpen[id]; ok {
			delete(r.pendingOpen, id)
			if body[0] == fxpHandle {
				if h, _, ok := sshString(body[5:]); ok {
					r.handles[h] = p
				}
			}
		}
		r.mu.Unlock()
		if err := r.writeClient(body); err != nil {
			return err
		}
		// ...and count the request answered only once the client has the
		// answer, so an fsync's reply always follows those of the requests
		// before it.
		r.mu.Lock()
		if seqs := r.byID[id]; len(seqs) > 0 {
			delete(r.outstanding, seqs[0])
			if len(seqs) == 1 {
				delete(r.byID, id)
			} else {
				r.byID[id] = seqs[1:]
			}
			r.cond.Broadcast()
		}
		r.mu.Unlock()
	}
}

// askedPerm returns the permissions in an SFTP ATTRS, or -1 where it has
// none (or cannot be read).
func askedPerm(attrs []byte) int {
	if len(attrs) < 4 {
		return -1
	}
	flags := binary.BigEndian.Uint32(attrs)
	b := attrs[4:]
	if flags&attrSize != 0 {
		if len(b) < 8 {
			return -1
		}
		b = b[8:]
	}
	if flags&attrUIDGID != 0 {
		if len(b) < 8 {
			return -1
		}
		b = b[8:]
	}
	if flags&attrPermissions == 0 || len(b) < 4 {
		return -1
	}
	return int(binary.BigEndian.Uint32(b) & 0o777)
}

// rewriteVersion adds fsync@openssh.com to an SSH_FXP_VERSION packet and
// drops hardlink@openssh.com. A packet it cannot parse passes unchanged.
func rewriteVersion(body []byte) []byte {
	if len(body) < 5 {
		return body
	}
	out := append([]byte(nil), body[:5]...)
	rest := body[5:]
	for len(rest) > 0 {
		name, r1, ok := sshString(rest)
		if !ok {
			return body
		}
		data, r2, ok := sshString(r1)
		if !ok {
			return body
		}
		rest = r2
		if name == extHardlink || name == extFsync {
			continue
		}
		out = appendString(appendString(out, name), data)
	}
	return appendString(appendString(out, extFsync), "1")
}

// fsync answers fsync@openssh.com for request id with the given arguments.
func (r *relay) fsync(id uint32, args []byte) error {
	handle, _, ok := sshString(args)
	if !ok {
		return r.status(id, fxFailure, "fsync: malformed request")
	}
	r.mu.Lock()
	mine := r.nextSeq
	for !r.done && r.inFlightBefore(mine) {
		r.cond.Wait()
	}
	p, known := r.handles[handle]
	r.mu.Unlock()
	if !known {
		return r.status(id, fxFailure, "fsync: no such open file handle")
	}
	if err := r.fs.syncPath(p); err != nil {
		r.log.Warn("sftp fsync failed", "path", p, "err", err)
		return r.status(id, statusCode(err), err.Error())
	}
	return r.status(id, fxOK, "")
}

// inFlightBefore reports whether a request sent before seq awaits its
// answer. r.mu is held.
func (r *relay) inFlightBefore(seq uint64) bool {
	for s := range r.outstanding {
		if s < seq {
			return true
		}
	}
	return false
}

func (r *relay) status(id, code uint32, msg string) error {
	b := []byte{fxpStatus}
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, code)
	b = appendString(b, msg)
	b = appendString(b, "")
	return r.writeClient(b)
}

func statusCode(err error) uint32 {
	switch errno(err) {
	case syscall.ENOENT:
		return fxNoSuchFile
	case syscall.EACCES, syscall.EPERM:
		return fxPermissionDenied
	}
	return fxFailure
}
