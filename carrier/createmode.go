package carrier

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"
)

// SFTP (draft-ietf-secsh-filexfer-02) values privateCreates looks for.
const (
	sftpOpen           = 3    // SSH_FXP_OPEN
	sftpCreat          = 0x08 // SSH_FXF_CREAT
	sftpAttrPerms      = 0x04 // SSH_FILEXFER_ATTR_PERMISSIONS
	maxRewrittenOpen   = 64 << 10
	createdPrivatePerm = 0o600
)

// privateCreates passes the SFTP packets the client writes on to w, and asks
// for permissions 0600 in each SSH_FXP_OPEN that may create a file and asks
// for none (pkg/sftp's client never does): OpenSSH's sftp-server, the agent
// and pkg/sftp's server then create a partial 0600 rather than 0666 less
// their umask. Its mode is set to the source's (see upload) by the next
// request; in an inbox directory open to others (older versions made them
// 0755) another user could open it in between and keep reading what is
// written (TestPartialCreatedPrivate).
type privateCreates struct {
	mu  sync.Mutex
	w   io.WriteCloser
	rem int    // bytes of the current packet still to pass on
	hdr []byte // a packet's start, gathered until its type is known; an open whole
}

// Write passes p on in one write, as the client wrote it, but for the opens
// it rewrites (and the start of a packet split across writes, held until
// its type is known).
func (c *privateCreates) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	from := 0 // p[from:i] passes on unchanged
	for i := 0; i < len(p); {
		if c.rem > 0 {
			k := min(c.rem, len(p)-i)
			c.rem, i = c.rem-k, i+k
			continue
		}
		if len(c.hdr) == 0 && len(p)-i >= 5 && !isOpen(p[i:]) {
			c.rem = 4 + int(binary.BigEndian.Uint32(p[i:]))
			continue
		}
		// An open, or a packet whose length and type are split across
		// writes: gather it.
		if i > from {
			out = append(out, p[from:i])
		}
		want := c.want()
		k := min(want-len(c.hdr), len(p)-i)
		c.hdr, i, from = append(c.hdr, p[i:i+k]...), i+k, i+k
		if len(c.hdr) < want || want == 5 && c.want() > 5 {
			continue // more to come (all of an open)
		}
		if want > 5 {
			out = append(out, withCreatePerm(c.hdr))
		} else {
			out = append(out, c.hdr)
			c.rem = 4 + int(binary.BigEndian.Uint32(c.hdr)) - len(c.hdr)
		}
		c.hdr = nil
	}
	if from < len(p) {
		out = append(out, p[from:])
	}
	var err error
	switch len(out) {
	case 0:
	case 1:
		_, err = c.w.Write(out[0])
	default:
		_, err = c.w.Write(bytes.Join(out, nil))
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// isOpen reports whether the packet starting b (at least its length and
// type) is an open privateCreates gathers.
func isOpen(b []byte) bool {
	l := 4 + int(binary.BigEndian.Uint32(b))
	return b[4] == sftpOpen && l > 5 && l <= maxRewrittenOpen
}

// Close closes w.
func (c *privateCreates) Close() error { return c.w.Close() }

// want is how much of the packet at hand to gather before passing it on:
// its length and type, and all of an open.
func (c *privateCreates) want() int {
	if len(c.hdr) < 5 || !isOpen(c.hdr) {
		return 5
	}
	return 4 + int(binary.BigEndian.Uint32(c.hdr))
}

// withCreatePerm returns the whole SSH_FXP_OPEN packet pkt asking for
// createdPrivatePerm where it may create a file and asks for no attributes;
// any other, unchanged.
func withCreatePerm(pkt []byte) []byte {
	b := pkt[9:] // past length, type and id
	if len(b) < 4 {
		return pkt
	}
	pathLen := int(binary.BigEndian.Uint32(b))
	if len(b) != 4+pathLen+8 {
		return pkt // not pflags and empty attributes after the path
	}
	pflags := binary.BigEndian.Uint32(b[4+pathLen:])
	attrFlags := binary.BigEndian.Uint32(b[4+pathLen+4:])
	if pflags&sftpCreat == 0 || attrFlags != 0 {
		return pkt
	}
	out := make([]byte, 0, len(pkt)+4)
	out = binary.BigEndian.AppendUint32(out, binary.BigEndian.Uint32(pkt)+4)
	out = append(out, pkt[4:len(pkt)-4]...)
	out = binary.BigEndian.AppendUint32(out, sftpAttrPerms)
	return binary.BigEndian.AppendUint32(out, createdPrivatePerm)
}
