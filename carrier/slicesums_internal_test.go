package carrier

import (
	"bytes"
	"crypto/sha256"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// The digests kept are those of each slice of n bytes from 0 (the last one
// short), whatever the writes' sizes, and read back only for the same size
// and slice, under the content's own name.
func TestSliceSumsRoundTrip(t *testing.T) {
	const n = 1000
	c := &Carrier{opts: Options{VerifySlice: n}}
	for _, size := range []int64{2 * n, 2*n + 1, 3*n - 1, 7 * n} {
		data := make([]byte, size)
		rand.New(rand.NewSource(size)).Read(data)
		s := c.newSliceSums(size, 0)
		for p := data; len(p) > 0; {
			k := min(len(p), 1+rand.Intn(2*n))
			s.Write(p[:k])
			p = p[k:]
		}
		dir := t.TempDir()
		sum := "ab" + string(bytes.Repeat([]byte("0"), 62))
		if err := keepSliceSums(dir, sum, size, n, s.digests()); err != nil {
			t.Fatal(err)
		}
		got := keptSliceSums(dir, sum, size, n)
		if want := (size + n - 1) / n; int64(len(got)) != want {
			t.Fatalf("size %d: %d digests kept, want %d", size, len(got), want)
		}
		for i, d := range got {
			sl := sha256.Sum256(data[int64(i)*n : min(int64(i+1)*n, size)])
			if !bytes.Equal(d, sl[:]) {
				t.Errorf("size %d: slice %d: digest %x, want %x", size, i, d, sl)
			}
		}
		if keptSliceSums(dir, sum, size+1, n) != nil || keptSliceSums(dir, sum, size, 2*n) != nil {
			t.Errorf("size %d: digests read back for another size or slice", size)
		}
		other := "cd" + sum[2:]
		text, _ := os.ReadFile(filepath.Join(dir, slicesDir, sum))
		os.WriteFile(filepath.Join(dir, slicesDir, other), text, 0o600)
		if keptSliceSums(dir, other, size, n) != nil {
			t.Errorf("size %d: digests read back for another content", size)
		}
	}
	if c.newSliceSums(2*n-1, 0) != nil || c.newSliceSums(4*n, 1) != nil {
		t.Errorf("digests taken for a file of fewer than two slices or a resumed download")
	}
}
