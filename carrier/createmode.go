package carrier

import (
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

func (c *privateCreates) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		if c.rem > 0 {
			k := min(c.rem, len(p))
			if _, err := c.w.Write(p[:k]); err != nil {
				return 0, err
			}
			c.rem, p = c.rem-k, p[k:]
			continue
		}
		want := c.want()
		k := min(want-len(c.hdr), len(p))
		c.hdr, p = append(c.hdr, p[:k]...), p[k:]
		if len(c.hdr) < want {
			continue
		}
		if want == 5 && c.want() > 5 {
			continue // an open: gather the rest of it
		}
		out := c.hdr
		if want > 5 {
			out = withCreatePerm(out)
		} else {
			c.rem = 4 + int(binary.BigEndian.Uint32(out)) - len(out)
		}
		if _, err := c.w.Write(out); err != nil {
			return 0, err
		}
		c.hdr = c.hdr[:0]
	}
	return n, nil
}

// Close closes w.
func (c *privateCreates) Close() error { return c.w.Close() }

// want is how much of the packet at hand to gather before passing it on:
// its length and type, and all of an open of a reasonable size.
func (c *privateCreates) want() int {
	if len(c.hdr) < 5 || c.hdr[4] != sftpOpen {
		return 5
	}
	l := 4 + int(binary.BigEndian.Uint32(c.hdr))
	if l < 5 || l > maxRewrittenOpen {
		return 5
	}
	return l
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
