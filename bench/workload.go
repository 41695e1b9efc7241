package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// workload is a set of files a host wants carried.
type workload struct {
	Key   string // short id: "big", "small", ...
	Title string
	Link  string // "loopback" or "wifi"
	// Profile is the host profile it runs on (profiles.go); "" is quick.
	Profile string
	files   []fileSpec
	tools   []string // tools run on it; nil means every transfer tool
	Skip    string   // why tools outside tools were not run
}

// fileSpec is one file: its path and how to make its content.
type fileSpec struct {
	Path string
	Size int64
	Seed uint64 // same seed, same content
}

// Bytes is the total size.
func (w *workload) Bytes() int64 {
	var n int64
	for _, f := range w.files {
		n += f.Size
	}
	return n
}

// Count is the number of files.
func (w *workload) Count() int { return len(w.files) }

// Distinct is the number of distinct contents.
func (w *workload) Distinct() int {
	seen := map[[2]uint64]bool{}
	for _, f := range w.files {
		seen[[2]uint64{f.Seed, uint64(f.Size)}] = true
	}
	return len(seen)
}

func (w *workload) profile() string {
	if w.Profile == "" {
		return profQuick
	}
	return w.Profile
}

func (w *workload) runs(tool string) bool {
	if w.tools == nil {
		return true
	}
	for _, t := range w.tools {
		if t == tool {
			return true
		}
	}
	return false
}

func oneFile(name string, size int64) []fileSpec {
	return []fileSpec{{Path: name, Size: size, Seed: 1}}
}

// smallTree is n files of size bytes in nested directories (10 x 10 x n/100).
func smallTree(n int, size int64) []fileSpec {
	out := make([]fileSpec, n)
	for i := range out {
		out[i] = fileSpec{
			Path: fmt.Sprintf("src/d%02d/e%02d/f%06d.dat", i%10, (i/10)%10, i),
			Size: size,
			Seed: uint64(1000 + i),
		}
	}
	return out
}

// photoCard is n files of min..max bytes, like a camera's card.
func photoCard(n int, lo, hi int64) []fileSpec {
	r := rand.New(rand.NewPCG(42, 42))
	out := make([]fileSpec, n)
	for i := range out {
		out[i] = fileSpec{
			Path: fmt.Sprintf("DCIM/%03dCANON/IMG_%04d.JPG", 100+i/100, i),
			Size: lo + r.Int64N(hi-lo+1),
			Seed: uint64(5000 + i),
		}
	}
	return out
}

// dedupSet is n paths sharing distinct contents of size bytes.
func dedupSet(n, distinct int, size int64) []fileSpec {
	out := make([]fileSpec, n)
	for i := range out {
		out[i] = fileSpec{
			Path: fmt.Sprintf("shared/user%02d/project%02d/vendor/lib%03d.so", i%20, (i/20)%10, i),
			Size: size,
			Seed: uint64(9000 + i%distinct),
		}
	}
	return out
}

// content writes f's bytes to w.
func (f fileSpec) content(w io.Writer) error {
	var seed [32]byte
	for i := range 8 {
		seed[i] = byte(f.Seed >> (8 * i))
	}
	r := rand.NewChaCha8(seed)
	_, err := io.CopyN(w, r, f.Size)
	return err
}

// manifest maps a slash path to the hex SHA-256 of its content.
type manifest map[string]string

// generate writes w's files under dir and returns their manifest.
func (w *workload) generate(dir string) (manifest, error) {
	m := manifest{}
	for _, f := range w.files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		out, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		err = f.content(io.MultiWriter(out, h))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		m[f.Path] = hex.EncodeToString(h.Sum(nil))
	}
	return m, nil
}

// readManifest hashes every regular file under dir. Names starting with
// ".messor" (partials, receipts) are reported too, so a leftover fails
// the comparison.
func readManifest(dir string) (manifest, error) {
	m := manifest{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			m[filepath.ToSlash(rel)] = "not a regular file"
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		m[filepath.ToSlash(rel)] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	return m, err
}

// diff describes how got differs from want, or "" when they match.
func (want manifest) diff(got manifest) string {
	var missing, extra, changed []string
	for p, h := range want {
		g, ok := got[p]
		switch {
		case !ok:
			missing = append(missing, p)
		case g != h:
			changed = append(changed, p)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			extra = append(extra, p)
		}
	}
	if len(missing)+len(extra)+len(changed) == 0 {
		return ""
	}
	list := func(ps []string) string {
		sort.Strings(ps)
		if len(ps) > 3 {
			return fmt.Sprintf("%s ... (%d)", strings.Join(ps[:3], ", "), len(ps))
		}
		return strings.Join(ps, ", ")
	}
	return fmt.Sprintf("%d missing [%s], %d extra [%s], %d changed [%s]",
		len(missing), list(missing), len(extra), list(extra), len(changed), list(changed))
}

// linkTree recreates src's tree under dst with hard links (cheap, and a
// tool that removes its source only unlinks), owned by acct.
func linkTree(src, dst string, acct account) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		t := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.MkdirAll(t, 0o755); err != nil {
				return err
			}
			if os.Geteuid() == 0 {
				return os.Lchown(t, acct.UID, acct.GID)
			}
			return nil
		}
		return os.Link(p, t)
	})
}
