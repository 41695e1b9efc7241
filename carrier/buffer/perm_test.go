package buffer

import (
	"io/fs"
	"testing"
)

// TestRecordPerm: a record keeps the source's permission bits; one written
// before they were recorded still parses, and its file is delivered 0600
// (never wider than its source can have been, and still its owner's).
func TestRecordPerm(t *testing.T) {
	const hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	old, err := parseRecord([]byte(`{"v":1,"source":"alpha","dest":"beta","path":"a.txt","sha256":"` + hash + `","size":4,"mtime":"2021-03-04T05:06:07Z","picked_at":"2021-03-04T05:07:00Z"}`))
	if err != nil {
		t.Fatalf("a record without perm: %v", err)
	}
	if old.HasPerm || old.DeliverPerm() != 0o600 {
		t.Errorf("a record without perm: HasPerm %v, delivered %v, want 0600", old.HasPerm, old.DeliverPerm())
	}
	for _, perm := range []fs.FileMode{0o755, 0o600, 0, 0o644} {
		e := old
		e.Perm, e.HasPerm = perm, true
		got, err := parseRecord(marshalRecord(e))
		if err != nil {
			t.Fatal(err)
		}
		if !got.HasPerm || got.DeliverPerm() != perm {
			t.Errorf("perm %v: after a round trip HasPerm %v, delivered %v", perm, got.HasPerm, got.DeliverPerm())
		}
	}
	e := old
	e.Perm, e.HasPerm = 0o755|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky, true
	if got := e.DeliverPerm(); got != 0o755 {
		t.Errorf("a setuid source is delivered %v, want 0755", got)
	}
}
