package carrier

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/messor-sync/messor/carrier/buffer"
)

// TestStatusShowsQuarantine: status counts what the buffer kept aside in
// quarantine/ (buffer.TestOpenAdoptsUnknownRecords puts it there at an open).
func TestStatusShowsQuarantine(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBuffer(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q := filepath.Join(dir, buffer.QuarantineDir)
	os.MkdirAll(q, 0o700)
	os.WriteFile(filepath.Join(q, "stray"), make([]byte, 10), 0o600)
	st, err := ReadStatus(b)
	if err != nil || st.Quarantine.Files != 1 || st.Quarantine.Bytes != 10 || st.Quarantine.Dir != q {
		t.Errorf("status shows quarantine %+v (%v), want 1 file of 10 bytes in %s", st.Quarantine, err, q)
	}
}
