package agent

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/messor-sync/messor/protocol"
)

// The agent serves messor/sent/ (the ledgers) under the same confinement
// as the other areas, and appends there when asked: two carriers appending
// to one ledger at once lose no line.
func TestSentAreaAppends(t *testing.T) {
	e := newEnv(t)
	e.start()
	p := protocol.LedgerPath("dest")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.sftp()
			f, err := c.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for i := range 50 {
				if _, err := f.Write(fmt.Appendf(nil, "line %d %d\n", w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, err := os.ReadFile(e.inRoot("sent/dest.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(got, []byte("\n")); n != 200 {
		t.Fatalf("ledger has %d lines after 4x50 appends:\n%s", n, got)
	}
	c := e.sftp()
	// Out of the area, as from any other.
	if _, err := c.Stat("messor/sent/../outbox"); err != nil {
		t.Fatalf("stat through ..: %v", err) // cleaned: messor/outbox
	}
	if err := c.Rename(p, "messor/outbox/dest.log"); err == nil {
		t.Fatal("renamed a ledger out of messor/sent/")
	}
	if err := os.Symlink("/etc", e.inRoot("sent/etc")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat("messor/sent/etc/passwd"); err == nil {
		t.Fatal("followed a symlink out of messor/sent/")
	}
}

// Leases, keep markers and receipts are messor's names a carrier needs on
// an agent; other .messor names stay refused.
func TestCarrierNamesAllowed(t *testing.T) {
	e := newEnv(t)
	e.start()
	c := e.sftp()
	for _, d := range []string{"messor/outbox/d", "messor/inbox/" + protocol.ReceiptsDirName, protocol.ReceiptDir("src")} {
		if err := c.Mkdir(d); err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
	}
	for _, p := range []string{"messor/outbox/" + protocol.KeepMarker, "messor/outbox/d/" + protocol.KeepMarker,
		"messor/outbox/d/" + protocol.LeasePrefix + ".f", protocol.ReceiptDir("src") + "/1.c0ffee.0123456789abcdef.receipt"} {
		writeFile(t, c, p, []byte("x"))
		if err := c.Remove(p); err != nil {
			t.Errorf("remove %s: %v", p, err)
		}
	}
	if err := c.Mkdir("messor/outbox/.messor-other"); err == nil || !strings.Contains(err.Error(), "permission") {
		t.Fatalf("mkdir .messor-other: %v, want permission denied", err)
	}
}
