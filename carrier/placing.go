package carrier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/messor-sync/messor/internal/durable"
	"github.com/messor-sync/messor/protocol"
)

// Placing notes. Putting a big file's partial in place (Session.place) is
// a link and an unlink on the host: OpenSSH's sftp-server renames so, and
// a host offering hardlink@openssh.com without that rename is sent the two
// apart. A carrier killed between them, or a host that crashed inside its
// own rename, leaves the partial as a second name of the file delivered.
// Its user may move that file out of the inbox and change it; a later visit
// resuming the partial would then write through to it. On a stock host
// with exec the partial's link count tells (partialHasOtherNames); on a
// host without exec nothing shown over SFTP does. So before the round trip
// that places a big file's partial, the carrier notes durably in its
// buffer that it is placing that partial on that host
// (placing/<hash of host>/<hash of partial path>), and removes the note
// once the host's answer settles it: the partial was placed and is gone,
// or the host refused with a status and the partial is still there, not
// placed. A partial found under a note is never resumed: it is removed (a
// name only: the carrier holds the content) and the file is sent afresh.
// Notes whose partials a dropoff visit does not deliver are settled at its
// start (settlePlacing).

const placingDir = "placing"

// placingHostDir is the directory of the notes for host.
func (b *Buffer) placingHostDir(host string) string {
	h := sha256.Sum256([]byte(host))
	return filepath.Join(b.Dir(), placingDir, hex.EncodeToString(h[:16]))
}

// placingNote is the note of placing partial (its path on the host) on host.
func (b *Buffer) placingNote(host, partial string) string {
	p := sha256.Sum256([]byte(partial))
	return filepath.Join(b.placingHostDir(host), hex.EncodeToString(p[:16]))
}

// notePlacing notes durably (file and directories synced) that partial is
// about to be placed on host.
func (b *Buffer) notePlacing(host, partial string) error {
	n := b.placingNote(host, partial)
	if err := mkdirSynced(b.Dir(), filepath.Dir(n)); err != nil {
		return fmt.Errorf("buffer %s: %w", b.Dir(), err)
	}
	data := fmt.Sprintf("messor-placing 1\nhost %s\npartial %s\n", host, partial)
	if err := durable.WriteFile(n, []byte(data)); err != nil {
		return fmt.Errorf("buffer %s: note placing %s: %w", b.Dir(), partial, err)
	}
	return nil
}

// placing reports whether a note says partial may have been placed on host
// (a note it cannot look at counts as one).
func (b *Buffer) placing(host, partial string) bool {
	_, err := os.Lstat(b.placingNote(host, partial))
	return !errors.Is(err, fs.ErrNotExist)
}

// placed removes the note of partial on host, once settled. Not synced: a
// note a crash brings back is settled again (its partial is not found, or
// is sent afresh).
func (b *Buffer) placed(host, partial string) {
	os.Remove(b.placingNote(host, partial))
}

// placingNotes lists the partials noted for host, by note path (with
// "" for a note that cannot be read: removed by settlePlacing as stale).
func (b *Buffer) placingNotes(host string) map[string]string {
	dir := b.placingHostDir(host)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, de := range ents {
		n := filepath.Join(dir, de.Name())
		if strings.HasSuffix(de.Name(), ".tmp") {
			out[n] = "" // a write cut short: never renamed into place
			continue
		}
		data, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		var got string
		for _, l := range strings.Split(string(data), "\n") {
			if p, ok := strings.CutPrefix(l, "partial "); ok {
				got = p
			}
		}
		if !strings.HasPrefix(got, protocol.Inbox+"/") || !strings.HasPrefix(path.Base(got), protocol.PartialPrefix) || b.placingNote(host, got) != n {
			out[n] = ""
			continue
		}
		out[n] = got
	}
	return out
}

// settlePlacing settles, at the start of a dropoff visit to s's host, the
// notes of partials that none of mine (the entries this visit delivers)
// puts in place: such a partial not found there was placed or removed;
// one still there (a name this carrier made: its buffer ID is in it) is
// removed, as a delivery would. Each note settled is removed; one whose
// partial cannot be looked at or removed stays for a later visit.
func (c *Carrier) settlePlacing(s *Session, mine []Entry) {
	notes := c.buf.placingNotes(s.Host.Name)
	if len(notes) == 0 {
		return
	}
	ours := map[string]bool{}
	for _, e := range mine {
		ours[c.partialOf(e)] = true
	}
	for n, p := range notes {
		if ours[p] {
			continue // its delivery looks at it
		}
		if p != "" {
			if err := s.sftp.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				c.log.Debug("a partial noted as being placed stays for a later visit", "host", s.Host.Name, "path", p, "err", err)
				continue
			}
		}
		os.Remove(n)
	}
}

// partialOf is the path on its destination of e's partial.
func (c *Carrier) partialOf(e Entry) string {
	return path.Join(inboxDir(e), protocol.PartialName(e.Path, e.Hash, c.buf.ID()))
}
