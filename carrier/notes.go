package carrier

import (
	"fmt"
	"path"
	"strings"
)

// NeverFits begins the waiting reason of a file larger than the whole
// buffer limit: it waits for ever unless the limit is raised.
const NeverFits = "larger than the whole buffer limit"

// NeverFits reports whether n is a file that can never fit the limit.
func (n FileNote) NeverFits() bool { return strings.HasPrefix(n.Reason, NeverFits) }

// waitNote is the note for w, left waiting for want of room.
func (c *Carrier) waitNote(w candidate) FileNote {
	p := path.Join(w.Dest, w.Path)
	if w.Size > c.buf.Limit() {
		return FileNote{p, fmt.Sprintf("%s (%s)", NeverFits, FormatSize(c.buf.Limit()))}
	}
	return FileNote{p, "over the buffer limit"}
}

// noOutboxHint is the Summary of a pickup host without an outbox.
const noOutboxHint = "no messor/outbox/ in the login directory (create it with mkdir -p ~/messor/outbox/<dest>)"
