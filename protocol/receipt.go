package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Receipts, ledgers and leases (see "Receipts and keep mode" in the
// package doc).
const (
	// Sent holds a source's ledgers, one per destination.
	Sent = "messor/sent"
	// KeepMarker, as messor/outbox/<KeepMarker> or
	// messor/outbox/<dest>/<KeepMarker>, switches an outbox (all of it,
	// or one destination's) to keep mode.
	KeepMarker = ReservedPrefix + "-keep"
	// ReceiptsDirName is the directory beside the inboxes that holds
	// receipts, one directory per source.
	ReceiptsDirName = ReservedPrefix + "-receipts"
	// LeasePrefix starts the name of a lease beside a leased outbox file.
	LeasePrefix = ReservedPrefix + ".lease"
)

// Errors returned (wrapped) by the receipt, ledger and lease parsers.
var (
	ErrBadReceipt = errors.New("not a valid receipt")
	ErrBadLedger  = errors.New("not a valid ledger line")
	ErrBadLease   = errors.New("not a valid lease")
)

// LedgerPath is the ledger on a source of what was delivered to dest.
func LedgerPath(dest string) string { return Sent + "/" + dest + ".log" }

// ReceiptDir is the directory on a destination holding receipts of what
// was delivered there from source.
func ReceiptDir(source string) string { return Inbox + "/" + ReceiptsDirName + "/" + source }

// Delivery is one delivered file, as a receipt and a ledger line say it.
type Delivery struct {
	Path    string    // relative to outbox/<dest> on the source
	Size    int64     //
	MTime   time.Time // the source's, to the second (zero in a ledger line)
	Hash    string    // SHA-256, lowercase hex
	At      time.Time // delivered (by the carrier's clock), to the second
	Carrier string    // the delivering carrier's ID
}

// Receipt is one receipt file: files delivered from Source to Dest.
type Receipt struct {
	Source, Dest string
	Files        []Delivery
}

const receiptMagic = "messor-receipt 1"

// FormatReceipt is the text of a receipt file: a header line, the source
// and destination, then one line per file:
//
//	<delivered-at RFC 3339> <size> <mtime, unix seconds> <sha256> <carrier> <path>
func FormatReceipt(r Receipt) []byte {
	var b bytes.Buffer
	n := 64
	for _, d := range r.Files {
		n += 64 + len(d.Hash) + len(d.Carrier) + len(d.Path) // a line: stamp, size and mtime within 64
	}
	b.Grow(n) // once, not doubling: a receipt may hold 100,000 lines
	fmt.Fprintf(&b, "%s\nsource %s\ndest %s\n", receiptMagic, r.Source, r.Dest)
	for _, d := range r.Files {
		fmt.Fprintf(&b, "%s %d %d %s %s %s\n", stamp(d.At), d.Size, d.MTime.Unix(), d.Hash, d.Carrier, d.Path)
	}
	return b.Bytes()
}

// ParseReceipt reads a receipt made by FormatReceipt. Every name in it is
// checked: host names with CheckHostName, paths with CleanRelPath, so a
// receipt can never name a file outside outbox/<dest>/ on its source.
func ParseReceipt(b []byte) (Receipt, error) {
	bad := func(why string) (Receipt, error) { return Receipt{}, fmt.Errorf("%w: %s", ErrBadReceipt, why) }
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 || lines[0] != receiptMagic || lines[len(lines)-1] != "" {
		return bad("header or last line")
	}
	src, ok1 := strings.CutPrefix(lines[1], "source ")
	dst, ok2 := strings.CutPrefix(lines[2], "dest ")
	if !ok1 || !ok2 || CheckHostName(src) != nil || CheckHostName(dst) != nil {
		return bad("source or dest")
	}
	r := Receipt{Source: src, Dest: dst}
	for i, l := range lines[3 : len(lines)-1] {
		f := strings.SplitN(l, " ", 6)
		if len(f) != 6 {
			return bad(fmt.Sprintf("line %d", i+4))
		}
		mt, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return bad(fmt.Sprintf("line %d: mtime", i+4))
		}
		d, err := parseDelivery(f[0], f[1], f[3], f[4], f[5])
		if err != nil {
			return bad(fmt.Sprintf("line %d: %v", i+4, err))
		}
		d.MTime = time.Unix(mt, 0)
		r.Files = append(r.Files, d)
	}
	return r, nil
}

// parseDelivery checks and reads the fields a receipt line and a ledger
// line share.
func parseDelivery(at, size, hash, carrier, p string) (Delivery, error) {
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return Delivery{}, errors.New("time")
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 {
		return Delivery{}, errors.New("size")
	}
	if !isHexHash(hash) {
		return Delivery{}, errors.New("sha256")
	}
	if checkCarrierID(carrier) != nil {
		return Delivery{}, errors.New("carrier")
	}
	if _, err := CleanRelPath(p); err != nil {
		return Delivery{}, err
	}
	return Delivery{Path: p, Size: n, Hash: hash, At: t, Carrier: carrier}, nil
}

func isHexHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func stamp(t time.Time) string { return t.UTC().Truncate(time.Second).Format(time.RFC3339) }

const receiptSuffix = ".receipt"

// ReceiptName is the file name of a receipt with this content, written by
// carrierID at time at:
//
//	<at, unix seconds in base 36>.<carrierID>.<16 hex digits of the content's SHA-256>.receipt
//
// The same receipt written twice has the same name.
func ReceiptName(at time.Time, carrierID string, content []byte) (string, error) {
	if err := checkCarrierID(carrierID); err != nil {
		return "", err
	}
	h := sha256.Sum256(content)
	return strconv.FormatInt(at.Unix(), 36) + "." + carrierID + "." + hex.EncodeToString(h[:8]) + receiptSuffix, nil
}

// ParseReceiptName reads a name made by ReceiptName.
func ParseReceiptName(name string) (at time.Time, carrierID string, err error) {
	bad := fmt.Errorf("%q: %w", name, ErrBadReceipt)
	rest, ok := strings.CutSuffix(name, receiptSuffix)
	f := strings.Split(rest, ".")
	if !ok || len(f) != 3 || checkCarrierID(f[1]) != nil || len(f[2]) != 16 {
		return time.Time{}, "", bad
	}
	if _, err := hex.DecodeString(f[2]); err != nil {
		return time.Time{}, "", bad
	}
	secs, err := strconv.ParseInt(f[0], 36, 64)
	if err != nil {
		return time.Time{}, "", bad
	}
	return time.Unix(secs, 0), f[1], nil
}

// LedgerLine is the ledger's line for d:
//
//	<delivered-at RFC 3339> <size> <sha256> <carrier> <path>
func LedgerLine(d Delivery) string {
	return fmt.Sprintf("%s %d %s %s %s\n", stamp(d.At), d.Size, d.Hash, d.Carrier, d.Path)
}

// ParseLedgerLine reads a line made by LedgerLine (with or without its
// newline). A ledger may hold the same line twice (two carriers appending
// at once): readers take the lines for a set keyed by path and hash.
func ParseLedgerLine(line string) (Delivery, error) {
	f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 5)
	if len(f) != 5 {
		return Delivery{}, fmt.Errorf("%w: %.60q", ErrBadLedger, line)
	}
	d, err := parseDelivery(f[0], f[1], f[2], f[3], f[4])
	if err != nil {
		return Delivery{}, fmt.Errorf("%w: %.60q: %v", ErrBadLedger, line, err)
	}
	return d, nil
}

// ReadLedger returns the (path, hash) keys of the lines of a ledger,
// passing over lines it cannot read (one cut short by a crash).
func ReadLedger(b []byte) map[string]bool {
	keys := map[string]bool{}
	for l := range bytes.SplitSeq(b, []byte("\n")) {
		if d, err := ParseLedgerLine(string(l)); err == nil {
			keys[d.LedgerKey()] = true
		}
	}
	return keys
}

// LedgerKey identifies d in a ledger: one line per path and content.
func (d Delivery) LedgerKey() string { return d.Path + "\x00" + d.Hash }

// Lease is what a lease file says: carrier Carrier carried the version
// (Size, MTime, Hash) of the file beside it, and other carriers leave that
// version alone until Expires.
type Lease struct {
	Carrier string
	Expires time.Time
	Size    int64
	MTime   time.Time // to the second
	Hash    string
}

const leaseMagic = "messor-lease 1"

// LeaseName is the hidden name, beside the outbox file name, of its lease:
// ".messor.lease.<name>", or for a name too long for that
// ".messor.lease~<name cut, "~", 8 hex digits of its SHA-256>".
func LeaseName(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	if n := LeasePrefix + "." + name; len(n) <= MaxNameLen {
		return n, nil
	}
	return LeasePrefix + "~" + shortName(name, MaxNameLen-len(LeasePrefix)-1), nil
}

// FormatLease is the text of a lease file.
func FormatLease(l Lease) []byte {
	return fmt.Appendf(nil, "%s\ncarrier %s\nexpires %s\nsize %d\nmtime %d\nsha256 %s\n",
		leaseMagic, l.Carrier, stamp(l.Expires), l.Size, l.MTime.Unix(), l.Hash)
}

// ParseLease reads a lease made by FormatLease; anything else (a lease cut
// short, garbage) is ErrBadLease, and counts as no lease.
func ParseLease(b []byte) (Lease, error) {
	bad := fmt.Errorf("%w", ErrBadLease)
	lines := strings.Split(string(b), "\n")
	if len(lines) != 7 || lines[0] != leaseMagic || lines[6] != "" {
		return Lease{}, bad
	}
	var v [5]string
	for i, k := range []string{"carrier ", "expires ", "size ", "mtime ", "sha256 "} {
		var ok bool
		if v[i], ok = strings.CutPrefix(lines[i+1], k); !ok {
			return Lease{}, bad
		}
	}
	exp, err1 := time.Parse(time.RFC3339, v[1])
	size, err2 := strconv.ParseInt(v[2], 10, 64)
	mt, err3 := strconv.ParseInt(v[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || size < 0 || checkCarrierID(v[0]) != nil || !isHexHash(v[4]) {
		return Lease{}, bad
	}
	return Lease{Carrier: v[0], Expires: exp, Size: size, MTime: time.Unix(mt, 0), Hash: v[4]}, nil
}
