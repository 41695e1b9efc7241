package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Layout of the messor directory relative to the SFTP login directory.
const (
	Root   = "messor"
	Outbox = "messor/outbox"
	Inbox  = "messor/inbox"
)

// ReservedPrefix starts every name that belongs to messor itself.
const ReservedPrefix = ".messor"

// Limits on names.
const (
	MaxNameLen     = 255  // bytes in one path component
	MaxPathLen     = 4096 // bytes in a whole relative path
	MaxHostNameLen = 64
	MaxDepth       = 64 // components in a relative path
)

// HashName names the content hash used everywhere.
const HashName = "sha256"

// Errors returned (wrapped) by the name checks.
var (
	ErrEmptyName    = errors.New("empty name")
	ErrDotName      = errors.New(`"." and ".." are not names`)
	ErrReservedName = errors.New("name reserved for messor (.messor*)")
	ErrBadChar      = errors.New("name contains a slash, NUL or control character")
	ErrBadUTF8      = errors.New("name is not valid UTF-8")
	ErrTooLong      = errors.New("name too long")
	ErrAbsolute     = errors.New("absolute path")
	ErrTooDeep      = errors.New("path too deep")
)

// CheckName reports whether s may be one component of a carried path: not
// empty, not "." or "..", no '/', '\\', NUL or control characters, valid
// UTF-8, at most MaxNameLen bytes, and not beginning with ReservedPrefix.
func CheckName(s string) error {
	switch {
	case s == "":
		return ErrEmptyName
	case s == "." || s == "..":
		return fmt.Errorf("%q: %w", s, ErrDotName)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%.40q...: %w", s, ErrTooLong)
	case !utf8.ValidString(s):
		return fmt.Errorf("%q: %w", s, ErrBadUTF8)
	case strings.HasPrefix(s, ReservedPrefix):
		return fmt.Errorf("%q: %w", s, ErrReservedName)
	}
	for _, r := range s {
		if r == '/' || r == '\\' || r == 0 || unicode.IsControl(r) {
			return fmt.Errorf("%q: %w", s, ErrBadChar)
		}
	}
	return nil
}

// CleanRelPath checks a slash-separated relative path as found under an
// outbox or inbox and returns it unchanged when every component passes
// CheckName. It never "cleans" a bad path into a good one: "a/../b" is an
// error, not "b".
func CleanRelPath(p string) (string, error) {
	if p == "" {
		return "", ErrEmptyName
	}
	if strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q: %w", p, ErrAbsolute)
	}
	if len(p) > MaxPathLen {
		return "", fmt.Errorf("%.40q...: %w", p, ErrTooLong)
	}
	parts := strings.Split(p, "/")
	if len(parts) > MaxDepth {
		return "", fmt.Errorf("%.40q...: %w", p, ErrTooDeep)
	}
	for _, c := range parts {
		if err := CheckName(c); err != nil {
			return "", fmt.Errorf("path %q: %w", p, err)
		}
	}
	return p, nil
}

// CheckHostName reports whether s may name a host: a directory under outbox/
// or inbox/, an mDNS instance, a hosts-file entry. Letters, digits, '.', '-'
// and '_', at most MaxHostNameLen bytes, not beginning with '.' or '-'.
func CheckHostName(s string) error {
	if s == "" {
		return fmt.Errorf("host name: %w", ErrEmptyName)
	}
	if len(s) > MaxHostNameLen {
		return fmt.Errorf("host name %.40q...: %w", s, ErrTooLong)
	}
	if s[0] == '.' || s[0] == '-' {
		return fmt.Errorf("host name %q: must not begin with '.' or '-'", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == '_'
		if !ok {
			return fmt.Errorf("host name %q: only letters, digits, '.', '-' and '_' are allowed", s)
		}
	}
	return nil
}

// OutboxDir is the outbox directory on a host for files bound to dest.
func OutboxDir(dest string) string { return Outbox + "/" + dest }

// InboxDir is the inbox directory on a host for files from source.
func InboxDir(source string) string { return Inbox + "/" + source }

// PartialPrefix starts every partial's name (PartialName).
const PartialPrefix = ReservedPrefix + ".part."

// PartialName is the hidden name, in the same directory as the final file,
// under which the carrier carrierID uploads content with the given hex hash
// to relPath before renaming it into place. It depends on all three, so two
// deliveries never share a partial (not even two carriers delivering the
// same file at once), and a retry by the same carrier finds its own.
func PartialName(relPath, hexHash, carrierID string) string {
	h := sha256.Sum256([]byte(relPath + "\x00" + hexHash + "\x00" + carrierID))
	return PartialPrefix + hex.EncodeToString(h[:8])
}

// ClaimPrefix starts the hidden name under which a carrier claims an
// outbox file before removing it (see "Removing a carried file" in the
// package doc).
const ClaimPrefix = ReservedPrefix + ".claim."

// Errors returned (wrapped) by the claim functions.
var (
	ErrNotClaim     = errors.New("not a claim name")
	ErrBadCarrierID = errors.New("carrier ID must be 1 to 16 letters or digits")
)

// claimHashLen is how many hex digits of the name's SHA-256 end a claim
// name whose file name had to be shortened.
const claimHashLen = 8

// ClaimName is the hidden name, in the same directory, under which the
// carrier carrierID claims the outbox file name at time at:
//
//	.messor.claim.<carrierID>.<at, unix seconds in base 36>.<name>
//
// A name too long to fit MaxNameLen is cut (at a character boundary) and
// ends "~" and the first 8 hex digits of its SHA-256, and the "." before it
// becomes "~", so [ParseClaim] tells the two apart. Claim names are never
// carried and never delivered.
func ClaimName(name, carrierID string, at time.Time) (string, error) {
	if err := checkCarrierID(carrierID); err != nil {
		return "", err
	}
	if err := CheckName(name); err != nil {
		return "", err
	}
	head := ClaimPrefix + carrierID + "." + strconv.FormatInt(at.Unix(), 36)
	if len(head)+1+len(name) <= MaxNameLen {
		return head + "." + name, nil
	}
	return head + "~" + shortName(name, MaxNameLen-len(head)-1), nil
}

// shortName cuts name to at most n bytes, the last 9 of them "~" and a hash
// of the whole name.
func shortName(name string, n int) string {
	h := sha256.Sum256([]byte(name))
	keep := n - 1 - claimHashLen
	for keep > 0 && !utf8.RuneStart(name[keep]) {
		keep--
	}
	return name[:keep] + "~" + hex.EncodeToString(h[:])[:claimHashLen]
}

func checkCarrierID(id string) error {
	if id == "" || len(id) > 16 {
		return ErrBadCarrierID
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return ErrBadCarrierID
		}
	}
	return nil
}

// Claim is what a claim name says.
type Claim struct {
	Carrier string    // the claiming carrier's ID
	At      time.Time // when it claimed (by its clock), to the second
	// Name is the claimed file's name. When Exact is false it was too long
	// for a claim name and Name is its shortened form (which passes
	// CheckName): the file cannot get its own name back from the claim
	// alone.
	Name  string
	Exact bool
}

// ParseClaim reads a claim name made by ClaimName. It returns ErrNotClaim
// (wrapped) for any other name, and never returns a Name that fails
// CheckName.
func ParseClaim(claim string) (Claim, error) {
	bad := fmt.Errorf("%q: %w", claim, ErrNotClaim)
	rest, ok := strings.CutPrefix(claim, ClaimPrefix)
	if !ok || len(claim) > MaxNameLen {
		return Claim{}, bad
	}
	id, rest, ok := strings.Cut(rest, ".")
	if !ok || checkCarrierID(id) != nil {
		return Claim{}, bad
	}
	i := strings.IndexAny(rest, ".~")
	if i < 0 {
		return Claim{}, bad
	}
	secs, err := strconv.ParseInt(rest[:i], 36, 64)
	if err != nil {
		return Claim{}, bad
	}
	c := Claim{Carrier: id, At: time.Unix(secs, 0), Name: rest[i+1:], Exact: rest[i] == '.'}
	if CheckName(c.Name) != nil {
		return Claim{}, bad
	}
	return c, nil
}

// ConflictName is the name used for the n-th (n >= 2) different file that
// wants the same final name: "photo.jpg" becomes "photo (2).jpg". The stem
// of a name near MaxNameLen is cut (at a character boundary) to fit.
func ConflictName(name string, n int) string {
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	tag := fmt.Sprintf(" (%d)", n)
	if stem == "" || len(tag)+len(ext) >= MaxNameLen { // ".bashrc", or an extension too long to keep
		stem, ext = name, ""
	}
	if keep := MaxNameLen - len(tag) - len(ext); len(stem) > keep {
		for keep > 0 && !utf8.RuneStart(stem[keep]) {
			keep--
		}
		stem = stem[:keep]
	}
	return stem + tag + ext
}

// AgentVersionTag appears in a messor agent's SSH server version string.
const AgentVersionTag = "messor"

// AgentServerVersion is the SSH version string a messor agent presents.
const AgentServerVersion = "SSH-2.0-messor_" + Version

// HashRangeRequest is the global SSH request a messor agent answers with the
// SHA-256 of the first Length bytes of Path (relative to the login
// directory). The reply payload is the 32-byte digest; a failure is a reply
// with ok=false.
const HashRangeRequest = "hash-range@messor"

// HashRangeMsg is the payload of a HashRangeRequest, in SSH wire encoding
// (golang.org/x/crypto/ssh.Marshal).
type HashRangeMsg struct {
	Path   string
	Length uint64
}

// HashSliceRequest is the global SSH request a messor agent answers with the
// SHA-256 of the Length bytes at Offset in Path (relative to the login
// directory), so that a carrier can verify a big upload piece by piece while
// it goes on. The reply payload is the 32-byte digest; a failure (the file
// is shorter than Offset+Length, is not a regular file, is out of reach) is
// a reply with ok=false. Agents older than this request refuse it the same
// way; a carrier then verifies the whole file with [HashRangeRequest].
const HashSliceRequest = "hash-slice@messor"

// HashSliceMsg is the payload of a HashSliceRequest, in SSH wire encoding.
type HashSliceMsg struct {
	Path   string
	Offset uint64
	Length uint64
}

// HashBatchRequest is the global SSH request a messor agent answers with the
// SHA-256 of the first Length bytes of each of several files (paths relative
// to the login directory), so that a carrier verifying many small files pays
// one round trip for a batch of them: global requests are answered one at a
// time, each in its own round trip. The payload is [MarshalHashBatch]'s; the
// reply payload is, per item in order, an SSH string holding the 32-byte
// digest, or empty where that item failed (as [HashRangeRequest] would
// have). A malformed request, or one of more than [MaxHashBatch] items, is
// refused (ok=false); agents older than this request refuse it the same
// way, and a carrier then asks [HashRangeRequest] for each file.
const HashBatchRequest = "hash-batch@messor"

// MaxHashBatch is the most items one HashBatchRequest may carry.
const MaxHashBatch = 1024

// MaxHashBatchLength is the most bytes an item of a HashBatchRequest may
// ask for: batches are for small files, and one request then hashes at
// most MaxHashBatch of them (256 MiB), not one huge file many times over,
// which holds up the connection's later global requests (keepalives) for
// longer than a carrier allows for. An agent answers an item asking for
// more as one it refuses (empty).
const MaxHashBatchLength = 256 << 10

// MaxHashBatchSize is the most bytes of payload a carrier puts in one
// HashBatchRequest ([HashBatchSize] tells an item's share): SSH
// implementations take packets of up to 256 KiB (OpenSSH, Go's x/crypto),
// and one bigger ends the connection, so the files of long paths a
// carrier's workers verify together go in several requests.
const MaxHashBatchSize = 64 << 10

// HashBatchSize is the bytes it adds to a HashBatchRequest's payload
// (whose count alone takes 4).
func (it HashBatchItem) HashBatchSize() int { return 4 + len(it.Path) + 8 }

// HashBatchItem is one file of a HashBatchRequest.
type HashBatchItem struct {
	Path   string
	Length uint64
}

// ErrHashBatch: a HashBatchRequest's payload or reply does not decode.
var ErrHashBatch = errors.New("malformed hash batch")

// MarshalHashBatch encodes items as a HashBatchRequest's payload: a uint32
// count, then per item its path as an SSH string and its length as a
// uint64, all big-endian.
func MarshalHashBatch(items []HashBatchItem) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(items)))
	for _, it := range items {
		b = appendSSHString(b, []byte(it.Path))
		b = binary.BigEndian.AppendUint64(b, it.Length)
	}
	return b
}

// UnmarshalHashBatch decodes a HashBatchRequest's payload; more than
// MaxHashBatch items, or trailing bytes, are an error.
func UnmarshalHashBatch(b []byte) ([]HashBatchItem, error) {
	if len(b) < 4 {
		return nil, ErrHashBatch
	}
	n := binary.BigEndian.Uint32(b)
	if n > MaxHashBatch {
		return nil, fmt.Errorf("%d items, more than %d: %w", n, MaxHashBatch, ErrHashBatch)
	}
	b = b[4:]
	items := make([]HashBatchItem, 0, n)
	for range n {
		p, rest, ok := CutString(b)
		if !ok || len(rest) < 8 {
			return nil, ErrHashBatch
		}
		items = append(items, HashBatchItem{Path: string(p), Length: binary.BigEndian.Uint64(rest)})
		b = rest[8:]
	}
	if len(b) != 0 {
		return nil, ErrHashBatch
	}
	return items, nil
}

// MarshalHashBatchReply encodes a HashBatchRequest's reply: per item an SSH
// string, the digest or empty (nil: that item failed).
func MarshalHashBatchReply(sums [][]byte) []byte {
	var b []byte
	for _, s := range sums {
		b = appendSSHString(b, s)
	}
	return b
}

// UnmarshalHashBatchReply decodes the reply to a HashBatchRequest of n
// items: per item its digest, or nil where that item failed. A reply of
// another count of items, or a digest that is not 32 bytes, is an error.
func UnmarshalHashBatchReply(b []byte, n int) ([][]byte, error) {
	sums := make([][]byte, 0, n)
	for range n {
		s, rest, ok := CutString(b)
		if !ok || len(s) != 0 && len(s) != sha256.Size {
			return nil, ErrHashBatch
		}
		if len(s) == 0 {
			s = nil
		}
		sums = append(sums, s)
		b = rest
	}
	if len(b) != 0 {
		return nil, ErrHashBatch
	}
	return sums, nil
}

func appendSSHString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// CutString cuts an SSH string (RFC 4251: a uint32 length, big-endian,
// then that many bytes), as hash batches and SFTP packets carry them, from
// the start of b; ok is false where b is too short for it.
func CutString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}

// HashTools are the commands a carrier may use on a stock host to compute
// a SHA-256 from standard input, best first: OpenSSL's uses the CPU's SHA
// instructions where it has them (about three times coreutils' speed), and
// sha256sum is on every GNU system. Each prints the hex digest first.
var HashTools = []string{"openssl dgst -sha256 -r", "sha256sum"}

// HashCommand is the POSIX shell command that prints the SHA-256 of the
// first n bytes of the file at absPath on a stock host (n < 0: all of it),
// using tool (one of HashTools).
func HashCommand(tool, absPath string, n int64) string {
	q := ShellQuote(absPath)
	if n < 0 {
		return tool + " < " + q
	}
	return fmt.Sprintf("head -c %d < %s | %s", n, q, tool)
}

// HashBlock is the block size HashRangeCommand reads with: a range starting
// at a multiple of it is read with one seek and no waste.
const HashBlock = 1 << 20

// HashRangeCommand is the POSIX shell command that prints the SHA-256 of the
// n bytes at offset off of the file at absPath on a stock host, using tool
// (one of HashTools). It seeks with dd (POSIX) in blocks of HashBlock when off
// is a multiple of it, in the largest power of two dividing off otherwise
// (correct, but slow for odd offsets), and cuts the stream to n bytes with
// head -c where n is not a whole number of those blocks (where it is, dd's
// count already stops there, and a third process copying every byte
// through one more pipe would only cost the host's CPU). If the file ends
// before off+n, the digest is of fewer bytes: the caller tells by
// comparing it with the digest it expects.
func HashRangeCommand(tool, absPath string, off, n int64) string {
	bs := int64(HashBlock)
	for off%bs != 0 {
		bs /= 2
	}
	count := (n + bs - 1) / bs
	cut := ""
	if n%bs != 0 {
		cut = fmt.Sprintf(" | head -c %d", n)
	}
	return fmt.Sprintf("dd bs=%d skip=%d count=%d < %s 2>/dev/null%s | %s",
		bs, off/bs, count, ShellQuote(absPath), cut, tool)
}

// BatchCommand is the command a carrier runs on a stock host to read the
// files names (relative to outboxDir, the host's absolute messor/outbox/)
// as one tar archive on its standard output (see "Reading small files in
// batches").
func BatchCommand(outboxDir string, names []string) string {
	var b strings.Builder
	b.WriteString("cd " + ShellQuote(outboxDir) + " && exec tar -cf - --no-recursion")
	for _, n := range names {
		b.WriteString(" " + ShellQuote("./"+n))
	}
	return b.String()
}

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// mDNS advertisement.
const (
	ServiceType    = "_messor._tcp"
	Domain         = "local."
	TxtVersion     = "v"
	TxtFingerprint = "fp"
	// Version is the protocol version an agent advertises.
	Version = "1"
	// DefaultAgentPort is where `messor agent` listens unless told otherwise.
	DefaultAgentPort = 2290
)
