package carrier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/messor-sync/messor/carrier/buffer"
	"github.com/messor-sync/messor/protocol"
)

// A carried file leaves the outbox by a claim (protocol/doc.go, "Removing a
// carried file"): it is renamed to a hidden claim name with a rename that
// never replaces, the claimed file is checked to be the version carried, and
// only then removed. A new version saved over the file (an editor's temp file
// renamed over it) is therefore either what was claimed, found different and
// put back, or lands beside the claim and is never touched.

// claimStaleAfter is how old another carrier's claim must be before a visit
// takes it for lost (that carrier died between claiming and removing) and
// puts the file back. A live claim lasts a few round trips.
const claimStaleAfter = time.Hour

// maxPutBack bounds the names tried when putting a claimed file back.
const maxPutBack = 100

// errNotCarried: the claimed file is not the version carried; it was put
// back for a later visit (a *putBackError).
var errNotCarried = errors.New("a new version was claimed and put back")

// errClaimGone: a claim to put back is gone already (another carrier
// settled it at the same moment).
var errClaimGone = errors.New("the claim is gone (settled by another carrier)")

// putBackError is errNotCarried with the name the new version was put back
// under, when its own was taken.
type putBackError struct{ as string }

func (e *putBackError) Error() string {
	if e.as == "" {
		return errNotCarried.Error()
	}
	return errNotCarried.Error() + " as " + e.as
}

func (e *putBackError) Is(target error) bool { return target == errNotCarried }

// notCarriedNote is a report's note for an errNotCarried.
func notCarriedNote(err error) string {
	const note = "a new version was saved while carried; it waits for the next visit"
	var pb *putBackError
	if errors.As(err, &pb) && pb.as != "" {
		return note + " as " + pb.as + " (its name was taken by a newer one)"
	}
	return note
}

// foundClaim is a claim met while listing an outbox.
type foundClaim struct {
	Dest, Dir string // Dir: the directory below outbox/<dest>/ ("" at its top)
	Name      string // the claim's file name
	Size      int64
	MTime     time.Time
	claim     protocol.Claim
	// Keep: its outbox is in keep mode, where only a receipt removes a
	// file, after hashing what it claimed: a claim of its own left there
	// goes back, for the receipt to claim again.
	Keep bool
}

// claimAndRemove removes the outbox file remote, whose version cd is
// committed in the buffer as o: claim, check, remove. A claimed file that
// is not that version is put back (errNotCarried); remote gone already is
// not an error.
func (c *Carrier) claimAndRemove(s *Session, cd candidate, o buffer.Origin, remote string) error {
	return c.claimCheckRemove(s, cd, o, remote, nil)
}

// claimCheckRemove is claimAndRemove where, when check is not nil, the
// claimed file of cd's size and mtime must also pass check (given the
// claim's path); errChanged from it puts the file back as another version.
func (c *Carrier) claimCheckRemove(s *Session, cd candidate, o buffer.Origin, remote string, check func(claim string) error) error {
	dir, base := path.Split(remote)
	name, err := protocol.ClaimName(base, c.claimID(), c.opts.Now())
	if err != nil {
		return fmt.Errorf("host %s: claim %s: %w", s.Host.Name, remote, err)
	}
	claim := dir + name
	if err := s.sftp.Rename(remote, claim); err != nil {
		if _, serr := s.sftp.Lstat(remote); errors.Is(serr, fs.ErrNotExist) {
			c.buf.ForgetCarried(o) // gone: another carrier, or the user
			return nil
		}
		c.markRemoveFailed(o)
		return fmt.Errorf("host %s: claim %s: %w", s.Host.Name, remote, err)
	}
	st, err := s.sftp.Lstat(claim)
	if errors.Is(err, fs.ErrNotExist) {
		// Put back by another carrier that took this one for lost: the
		// file is carried, and its record makes the next visit remove it.
		c.log.Warn("a claim was put back by another carrier", "host", s.Host.Name, "path", remote)
		return nil
	}
	if err == nil {
		err = sameVersion(func() (fs.FileInfo, error) { return st, nil }, cd)
	}
	if err == nil && check != nil {
		err = check(claim)
	}
	if err != nil && !errors.Is(err, errChanged) {
		// Cannot tell: the claim stays for the next visit to settle.
		c.markRemoveFailed(o)
		return fmt.Errorf("host %s: look at claim %s: %w", s.Host.Name, claim, err)
	}
	if err != nil {
		// Another version was saved over the file since it was read: the
		// version carried is gone, the claimed one goes back.
		c.buf.ForgetCarried(o)
		to, perr := c.putBack(s, claim, remote)
		if errors.Is(perr, errClaimGone) {
			// Put back (or carried) by another carrier that took
			// this one for lost.
			return &putBackError{}
		}
		if perr != nil {
			return fmt.Errorf("host %s: a new version of %s was claimed and cannot be put back (it stays as %s until the next visit): %w", s.Host.Name, remote, claim, perr)
		}
		c.log.Info("a new version appeared while committing; it waits for the next visit", "host", s.Host.Name, "path", remote, "as", to)
		if to == remote {
			return &putBackError{}
		}
		return &putBackError{as: path.Base(to)}
	}
	if err := s.sftp.Remove(claim); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// The claim stays, holding the carried version: the next visit
		// settles it.
		c.markRemoveFailed(o)
		return fmt.Errorf("host %s: remove %s: %w", s.Host.Name, claim, err)
	}
	c.buf.ForgetCarried(o)
	return nil
}

// claimID names this carrier in its claims: its buffer's ID, or a hash of
// it where that is no valid carrier ID (made by hand, or by another version).
func (c *Carrier) claimID() string {
	id := c.buf.ID()
	if _, err := protocol.ClaimName("x", id, time.Time{}); err == nil {
		return id
	}
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:8])
}

func (c *Carrier) markRemoveFailed(o buffer.Origin) {
	if err := c.buf.RemoveFailed(o); err != nil {
		c.log.Warn("index", "err", err)
	}
}

// putBack renames the claimed file claim to orig, never replacing a file:
// if orig is taken (a newer version), to the first free
// protocol.ConflictName, so both are kept. It returns the name used.
func (c *Carrier) putBack(s *Session, claim, orig string) (string, error) {
	dir, base := path.Split(orig)
	var err error
	for n := 1; n <= maxPutBack; n++ {
		to := orig
		if n > 1 {
			to = dir + protocol.ConflictName(base, n)
		}
		if err = c.placeNoReplace(s, claim, to); err == nil {
			return to, nil
		}
		if _, cerr := s.sftp.Lstat(claim); errors.Is(cerr, fs.ErrNotExist) {
			return "", errClaimGone
		}
		if _, serr := s.sftp.Lstat(to); serr != nil {
			// Not taken (or cannot tell): the rename failed for
			// another reason.
			return "", err
		}
	}
	return "", fmt.Errorf("%s and %d other names are taken: %w", orig, maxPutBack-1, err)
}

// placeNoReplace renames from to to unless to exists. Where the host's
// rename may replace (some non-OpenSSH servers) and no hard link is
// offered, it looks first, leaving a window of one round trip.
func (c *Carrier) placeNoReplace(s *Session, from, to string) error {
	if !s.noReplace {
		if _, err := s.sftp.Lstat(to); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", to, fs.ErrExist)
		}
	}
	return s.place(from, to)
}

// settleClaims settles the claims a listing met, left by a carrier that
// stopped between claiming and removing: this carrier's own are removed
// when their version is carried, put back otherwise (under the full name
// when it was shortened: longNames); another carrier's are put back once
// further than claimStaleAfter from now, past or future (its clock may be
// wrong; a carried duplicate arrives as identical content, which counts as
// delivered once). One already gone was settled by another carrier.
func (c *Carrier) settleClaims(s *Session, claims []foundClaim, r *HostReport) {
	now := c.opts.Now()
	var long longNames
	for _, fc := range claims {
		own := fc.claim.Carrier == c.claimID()
		if age := now.Sub(fc.claim.At); !own && age < claimStaleAfter && age > -claimStaleAfter {
			c.log.Debug("claimed by another carrier", "host", s.Host.Name, "dest", fc.Dest, "path", path.Join(fc.Dir, fc.Name))
			continue
		}
		name, exact := fc.claim.Name, fc.claim.Exact
		if own && !exact {
			if long == nil {
				long = c.longNames(s)
			}
			name, exact = long.find(c.claimID(), fc)
		}
		base := path.Join(protocol.OutboxDir(fc.Dest), fc.Dir)
		claim, orig := path.Join(base, fc.Name), path.Join(base, name)
		shown := path.Join(fc.Dest, fc.Dir, name)
		if own && exact && !fc.Keep {
			o := buffer.Origin{Source: s.Host.Name, Dest: fc.Dest, Path: path.Join(fc.Dir, name), Size: fc.Size, MTime: fc.MTime.Unix()}
			carried, err := c.buf.Carried([]buffer.Origin{o})
			if err == nil && carried[0] {
				if err := s.sftp.Remove(claim); err != nil && !errors.Is(err, fs.ErrNotExist) {
					r.Skipped = append(r.Skipped, FileNote{shown, "carried, cannot remove its claim from the outbox"})
					c.log.Warn("carried, cannot remove its claim", "host", s.Host.Name, "path", claim, "err", err)
					continue
				}
				c.buf.ForgetCarried(o)
				r.Already++
				continue
			}
		}
		to, err := c.putBack(s, claim, orig)
		if errors.Is(err, errClaimGone) {
			c.log.Debug("a claim was settled by another carrier", "host", s.Host.Name, "path", claim)
			continue
		}
		if err != nil {
			r.Failed = append(r.Failed, FileNote{shown, "claimed and not carried, cannot put it back: " + err.Error()})
			c.log.Error("cannot put a claimed file back", "host", s.Host.Name, "path", claim, "err", err)
			continue
		}
		note := "claimed by a carrier that stopped; put back, carried next visit"
		if to != orig {
			note += " as " + path.Base(to)
		}
		r.Waiting = append(r.Waiting, FileNote{shown, note})
		c.log.Info("put back a claimed file", "host", s.Host.Name, "path", to, "claim", claim)
	}
}

// longNames finds the full names of this carrier's own claims whose file
// names were too long for a claim name and shortened (ending "~" and a
// hash of the full name), among the files of the host it recorded as
// carried (records kept after delivery until the outbox copy is gone): so
// that such a file is removed, or put back under its own name, not
// delivered again under the shortened one. Built once a visit needs it.
type longNames map[string][]string // longKey -> file names

// shortHashLen is how many hex digits of the full name's SHA-256 end a
// shortened name in a claim name (protocol.ClaimName).
const shortHashLen = 8

func longKey(dest, dir, hash string) string { return dest + "\x00" + dir + "\x00" + hash }

func (c *Carrier) longNames(s *Session) longNames {
	idx := longNames{}
	err := c.buf.CarriedPaths(s.Host.Name, func(dest, p string) {
		base := path.Base(p)
		h := sha256.Sum256([]byte(base))
		k := longKey(dest, path.Dir(p), hex.EncodeToString(h[:])[:shortHashLen])
		idx[k] = append(idx[k], base)
	})
	if err != nil {
		c.log.Warn("index", "err", err)
	}
	return idx
}

// find returns the full name of own claim fc, or its shortened name (not
// exact) when no carried file has it.
func (l longNames) find(id string, fc foundClaim) (name string, exact bool) {
	dir := fc.Dir
	if dir == "" {
		dir = "."
	}
	short := fc.claim.Name
	hash := short[max(0, len(short)-shortHashLen):]
	for _, n := range l[longKey(fc.Dest, dir, hash)] {
		if cn, err := protocol.ClaimName(n, id, fc.claim.At); err == nil && cn == fc.Name {
			return n, true
		}
	}
	return short, false
}
