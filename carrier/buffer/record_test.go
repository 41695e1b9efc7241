package buffer

import (
	"reflect"
	"testing"
	"time"
)

// FuzzEntryRecord feeds arbitrary bytes to the record parser: it never
// panics, accepts only entries with good names, hash and size, and what it
// accepts survives a round trip.
func FuzzEntryRecord(f *testing.F) {
	good := Entry{Source: "alpha", Dest: "beta", Path: "a b/ünï.txt",
		Hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Size: 4,
		MTime: time.Unix(1700000000, 0).UTC(), PickedAt: time.Unix(1700000100, 5).UTC()}
	f.Add(marshalRecord(good))
	f.Add([]byte(`{"v":1,"source":"../x","dest":"beta","path":"p","sha256":"00","size":1}`))
	f.Add([]byte(`{"v":1,"source":"a","dest":"b","path":"../../etc/passwd","sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","size":-1}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte("\x00\xff junk"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseRecord(b)
		if err != nil {
			return
		}
		if e.Size < 0 || len(e.Hash) != 64 || e.Path == "" || e.Source == "" || e.Dest == "" {
			t.Fatalf("accepted a bad entry: %+v", e)
		}
		again, err := parseRecord(marshalRecord(e))
		if err != nil {
			t.Fatalf("round trip of %+v: %v", e, err)
		}
		if !reflect.DeepEqual(again, e) && !(again.MTime.Equal(e.MTime) && again.PickedAt.Equal(e.PickedAt)) {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
	})
}
