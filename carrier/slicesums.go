package carrier

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Slice digests kept from pickup, so that a dropoff need not hash its copy.
//
// A big upload is verified slice by slice (sliceverify.go): the host's
// digest of each slice is compared with the carrier's digest of the same
// bytes of the content. Without kept digests the carrier reads its copy of
// the object once more while uploading and hashes every byte twice (the
// whole, which must be the content address, and its slice); that was 60%
// of the carrier's CPU on a big dropoff. A fresh download already streams
// every byte of the content through the hash that becomes its address:
// sliceSums hashes the same bytes per slice alongside, and the digests are
// kept beside the buffer (slicesDir/<content hash>) once the object is
// committed. They are digests of exactly the bytes whose SHA-256 is the
// address, so a dropoff whose host digests all equal them delivered the
// content, with no read of the carrier's copy.
//
// The file is a cache, never the only proof: one that is missing, torn, or
// for another content, slice size or file size is ignored (each file names
// the content it is for and carries the SHA-256 of its own text), and the
// upload hashes its copy as before. The name inside matters: the digests
// of one content under another's name would prove an object holding the
// first content to be the second (TestSliceSumsOtherContent).
// Keyed by content, a kept file stays true after the object leaves the
// buffer; dropSliceSums removes those whose object is gone. A slice the
// host hashes differently from a kept digest removes the kept file with
// the host's partial, so the next attempt hashes the carrier's copy and
// can tell a copy damaged in the buffer from bytes damaged on the way.

// slicesDir is the buffer's subdirectory for kept slice digests. It is
// outside objects/ (whose unknown files the buffer's recovery moves to
// quarantine) and nothing in the buffer reads it.
const slicesDir = "slicesums"

const sliceSumsMagic = "messor slice sha256 v2"

// sliceSums hashes a stream from offset 0 in slices of n bytes.
type sliceSums struct {
	n, pos int64
	part   hash.Hash
	sums   [][]byte
}

// newSliceSums returns a hasher of a fresh download of size bytes in the
// slices a dropoff verifies (Options.VerifySlice), or nil where a dropoff
// of that size is not verified in slices.
func (c *Carrier) newSliceSums(size, from int64) *sliceSums {
	n := c.sliceSize(size)
	if from != 0 || n == 0 {
		return nil
	}
	return &sliceSums{n: n, part: sha256.New()}
}

func (s *sliceSums) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), s.n-s.pos%s.n)
		s.part.Write(p[:k])
		s.pos += k
		p = p[k:]
		if s.pos%s.n == 0 {
			s.sums = append(s.sums, s.part.Sum(nil))
			s.part.Reset()
		}
	}
	return total, nil
}

// digests returns the digests of the slices fed so far, the last one
// short where the stream ended inside it.
func (s *sliceSums) digests() [][]byte {
	if s.pos%s.n == 0 {
		return s.sums
	}
	return append(s.sums, s.part.Sum(nil))
}

// keepSliceSums writes the digests of the content hashed sum (size bytes
// in slices of n) beside the buffer. A failure only costs the next dropoff
// a read of the carrier's copy, so it is returned for the log.
func keepSliceSums(bufDir, sum string, size, n int64, sums [][]byte) error {
	if int64(len(sums)) != (size+n-1)/n {
		return fmt.Errorf("%d slice digests for a file of %d bytes in slices of %d", len(sums), size, n)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nsha256 %s\nsize %d\nslice %d\n", sliceSumsMagic, sum, size, n)
	for _, d := range sums {
		fmt.Fprintf(&b, "%x\n", d)
	}
	check := sha256.Sum256(b.Bytes())
	fmt.Fprintf(&b, "check %x\n", check)
	dir := filepath.Join(bufDir, slicesDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// No fsync: a file torn by a crash fails its check and is ignored.
		err = os.Rename(tmp.Name(), filepath.Join(dir, sum))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// keptSliceSums returns the digests kept for the content hashed sum, of
// size bytes in slices of n, or nil where none are kept for that content,
// size and slice (or the file does not pass its check).
func keptSliceSums(bufDir, sum string, size, n int64) [][]byte {
	b, err := os.ReadFile(filepath.Join(bufDir, slicesDir, sum))
	if err != nil {
		return nil
	}
	i := bytes.LastIndex(b, []byte("check "))
	if i < 0 || !strings.HasSuffix(string(b), "\n") {
		return nil
	}
	want := sha256.Sum256(b[:i])
	if got, err := hex.DecodeString(strings.TrimSuffix(string(b[i+len("check "):]), "\n")); err != nil || !bytes.Equal(got, want[:]) {
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b[:i]))
	header := []string{sliceSumsMagic, "sha256 " + sum, "size " + strconv.FormatInt(size, 10), "slice " + strconv.FormatInt(n, 10)}
	for _, h := range header {
		if !sc.Scan() || sc.Text() != h {
			return nil
		}
	}
	var sums [][]byte
	for sc.Scan() {
		d, err := hex.DecodeString(sc.Text())
		if err != nil || len(d) != sha256.Size {
			return nil
		}
		sums = append(sums, d)
	}
	if int64(len(sums)) != (size+n-1)/n {
		return nil
	}
	return sums
}

// keepDigests keeps the slice digests of a fresh download of the content
// hashed sum: sums's, or those the source check took (sc, which hashed
// the same slices to compare them with the host's).
func (c *Carrier) keepDigests(sum string, size int64, sums *sliceSums, sc *sourceCheck) {
	var d [][]byte
	switch {
	case sums != nil:
		d = sums.digests()
	case sc != nil:
		d = sc.digests()
	}
	if d == nil {
		return
	}
	if err := keepSliceSums(c.buf.Dir(), sum, size, c.opts.VerifySlice, d); err != nil {
		c.log.Debug("cannot keep the slice digests; the dropoff will hash its copy", "sha256", sum, "err", err)
	}
}

// forgetSliceSums removes the digests kept for sum.
func forgetSliceSums(bufDir, sum string) {
	os.Remove(filepath.Join(bufDir, slicesDir, sum))
}

// dropSliceSums removes the kept digests whose object left the buffer, and
// temporary files a killed carrier left (older than a minute: a pickup
// going on may be writing one).
func (c *Carrier) dropSliceSums() {
	dir := filepath.Join(c.buf.Dir(), slicesDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
				os.Remove(filepath.Join(dir, name))
			}
			continue
		}
		if len(name) != 2*sha256.Size {
			continue // not ours
		}
		if _, err := os.Stat(c.buf.ObjectPath(name)); errors.Is(err, fs.ErrNotExist) {
			os.Remove(filepath.Join(dir, name))
		}
	}
}
