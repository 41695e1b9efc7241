package protocol

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestReceiptRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 2, 3, 4, 5, 0, time.UTC)
	r := Receipt{Source: "alpha", Dest: "beta", Files: []Delivery{
		{Path: "docs/a b.txt", Size: 12, MTime: time.Unix(1700000000, 0), Hash: strings.Repeat("ab", 32), At: at, Carrier: "c0ffee"},
		{Path: "x", Size: 0, MTime: time.Unix(5, 0), Hash: strings.Repeat("00", 32), At: at, Carrier: "c0ffee"},
	}}
	b := FormatReceipt(r)
	got, err := ParseReceipt(b)
	if err != nil {
		t.Fatalf("ParseReceipt(%q): %v", b, err)
	}
	if got.Source != "alpha" || got.Dest != "beta" || len(got.Files) != 2 {
		t.Fatalf("got %+v", got)
	}
	f := got.Files[0]
	if f.Path != "docs/a b.txt" || f.Size != 12 || f.MTime.Unix() != 1700000000 || !f.At.Equal(at) || f.Carrier != "c0ffee" {
		t.Fatalf("got %+v", f)
	}
	name, err := ReceiptName(at, "c0ffee", b)
	if err != nil {
		t.Fatal(err)
	}
	if n2, _ := ReceiptName(at, "c0ffee", b); n2 != name {
		t.Fatalf("names differ: %s %s", name, n2)
	}
	when, id, err := ParseReceiptName(name)
	if err != nil || !when.Equal(at) || id != "c0ffee" {
		t.Fatalf("ParseReceiptName(%s) = %v %s %v", name, when, id, err)
	}
}

// A receipt is read from a host and its names lead to removals on another:
// every name that could escape outbox/<dest>/ or messor/sent/ is refused.
func TestReceiptHostileNames(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for _, body := range []string{
		"messor-receipt 1\nsource ../x\ndest beta\n2026-12-02T03:04:05Z 1 1 " + h + " c0ffee a\n",
		"messor-receipt 1\nsource alpha\ndest ../../etc\n2026-12-02T03:04:05Z 1 1 " + h + " c0ffee a\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z 1 1 " + h + " c0ffee ../../passwd\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z 1 1 " + h + " c0ffee /etc/passwd\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z 1 1 " + h + " c0ffee a/.messor-keep\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z 1 1 " + h + " c0ffee a//b\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z 1 1 " + h + " c0/fee a\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z -1 1 " + h + " c0ffee a\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z 1 1 XYZ c0ffee a\n",
		"messor-receipt 1\nsource alpha\ndest beta\n2026-12-02T03:04:05Z 1 1 " + h + " c0ffee a", // cut short
		"garbage",
	} {
		if r, err := ParseReceipt([]byte(body)); !errors.Is(err, ErrBadReceipt) {
			t.Errorf("ParseReceipt(%q) = %+v, %v; want ErrBadReceipt", body, r, err)
		}
	}
	for _, n := range []string{"x.receipt", "1.c0ffee.0123456789abcdef", "1.c0/ffee.0123456789abcdef.receipt", "../1.c0ffee.0123456789abcdef.receipt"} {
		if _, _, err := ParseReceiptName(n); err == nil {
			t.Errorf("ParseReceiptName(%q) accepted", n)
		}
	}
}

func TestLedgerLines(t *testing.T) {
	d := Delivery{Path: "a/b c", Size: 3, Hash: strings.Repeat("cd", 32), At: time.Unix(1764644645, 0), Carrier: "c1"}
	l := LedgerLine(d)
	if !strings.HasSuffix(l, " a/b c\n") || strings.Count(l, "\n") != 1 {
		t.Fatalf("LedgerLine = %q", l)
	}
	got, err := ParseLedgerLine(l)
	if err != nil || got.LedgerKey() != d.LedgerKey() {
		t.Fatalf("ParseLedgerLine(%q) = %+v, %v", l, got, err)
	}
	// A duplicated line, a line cut short and garbage: the set holds the one.
	keys := ReadLedger([]byte(l + l + "garbage\n" + l[:20]))
	if len(keys) != 1 || !keys[d.LedgerKey()] {
		t.Fatalf("ReadLedger = %v", keys)
	}
}

func TestLease(t *testing.T) {
	l := Lease{Carrier: "c0ffee", Expires: time.Unix(1764644645, 0), Size: 9, MTime: time.Unix(17, 0), Hash: strings.Repeat("ef", 32)}
	got, err := ParseLease(FormatLease(l))
	if err != nil || got.Carrier != l.Carrier || !got.Expires.Equal(l.Expires) || got.Size != 9 || got.MTime.Unix() != 17 || got.Hash != l.Hash {
		t.Fatalf("ParseLease = %+v, %v", got, err)
	}
	for _, g := range []string{"", "garbage", string(FormatLease(l))[:30], strings.Replace(string(FormatLease(l)), "size 9", "size -9", 1)} {
		if _, err := ParseLease([]byte(g)); !errors.Is(err, ErrBadLease) {
			t.Errorf("ParseLease(%q): %v, want ErrBadLease", g, err)
		}
	}
	n, err := LeaseName("photo.jpg")
	if err != nil || n != ".messor.lease.photo.jpg" {
		t.Fatalf("LeaseName = %q, %v", n, err)
	}
	long := strings.Repeat("é", 127) // 254 bytes
	n, err = LeaseName(long)
	if err != nil || len(n) > MaxNameLen || !strings.HasPrefix(n, LeasePrefix+"~") {
		t.Fatalf("LeaseName(long) = %q (%d), %v", n, len(n), err)
	}
	if n2, _ := LeaseName(long[:252] + "a"); n2 == n {
		t.Fatal("two long names share a lease name")
	}
	if _, err := LeaseName("../x"); err == nil {
		t.Fatal("LeaseName accepted a bad name")
	}
	if CheckName(KeepMarker) == nil || CheckName(ReceiptsDirName) == nil || CheckHostName(ReceiptsDirName) == nil {
		t.Fatal("messor's own names must never pass as carried names or hosts")
	}
}
