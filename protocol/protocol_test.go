package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		want error
	}{
		{"photo.jpg", nil},
		{"with space.txt", nil},
		{"日本語.txt", nil},
		{"-leading-dash", nil},
		{".hidden", nil},
		{"messor", nil},
		{"", ErrEmptyName},
		{".", ErrDotName},
		{"..", ErrDotName},
		{"a/b", ErrBadChar},
		{`a\b`, ErrBadChar},
		{"nul\x00", ErrBadChar},
		{"new\nline", ErrBadChar},
		{"tab\there", ErrBadChar},
		{"del\x7f", ErrBadChar},
		{"c1\u0085", ErrBadChar},
		{"\xff\xfe", ErrBadUTF8},
		{".messor", ErrReservedName},
		{".messor.part.0123", ErrReservedName},
		{".messorx", ErrReservedName},
		{strings.Repeat("x", MaxNameLen), nil},
		{strings.Repeat("x", MaxNameLen+1), ErrTooLong},
	}
	for _, tt := range tests {
		err := CheckName(tt.name)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("CheckName(%q) = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestCleanRelPath(t *testing.T) {
	good := []string{"a", "a/b/c.txt", "dir with space/ü.txt"}
	bad := []string{"", "/etc/passwd", "../x", "a/../../b", "a/./b", "a//b", "a/", "a/.messor.part.1",
		strings.Repeat("a/", MaxDepth) + "x", "a/b\x00c"}
	for _, p := range good {
		if got, err := CleanRelPath(p); err != nil || got != p {
			t.Errorf("CleanRelPath(%q) = %q, %v", p, got, err)
		}
	}
	for _, p := range bad {
		if got, err := CleanRelPath(p); err == nil {
			t.Errorf("CleanRelPath(%q) = %q, want an error", p, got)
		}
	}
}

func TestCheckHostName(t *testing.T) {
	for _, n := range []string{"alpha", "nas.home", "host_1", "A-b"} {
		if err := CheckHostName(n); err != nil {
			t.Errorf("CheckHostName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", "-x", ".x", "a b", "a/b", "ä", strings.Repeat("h", MaxHostNameLen+1), "x\n"} {
		if err := CheckHostName(n); err == nil {
			t.Errorf("CheckHostName(%q) accepted", n)
		}
	}
}

func TestConflictName(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"photo.jpg", 2, "photo (2).jpg"},
		{"archive.tar.gz", 3, "archive.tar (3).gz"},
		{"noext", 2, "noext (2)"},
		{".bashrc", 2, ".bashrc (2)"},
		// A name near MaxNameLen: its stem is cut (at a character) to fit.
		{strings.Repeat("x", 250) + ".txt", 2, strings.Repeat("x", 247) + " (2).txt"},
		{"a" + strings.Repeat("é", 125) + ".t", 10, "a" + strings.Repeat("é", 123) + " (10).t"},
		{"a." + strings.Repeat("e", 253), 2, "a." + strings.Repeat("e", 249) + " (2)"},
	}
	for _, tt := range tests {
		if got := ConflictName(tt.in, tt.n); got != tt.want {
			t.Errorf("ConflictName(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
		if err := CheckName(ConflictName(tt.in, tt.n)); err != nil {
			t.Errorf("ConflictName(%q) is not a valid name: %v", tt.in, err)
		}
	}
}

func TestPartialName(t *testing.T) {
	a := PartialName("x/y", "ab", "c1")
	if !strings.HasPrefix(a, ReservedPrefix+".part.") || CheckName(a) == nil {
		t.Errorf("PartialName = %q: must be reserved", a)
	}
	if a == PartialName("x/z", "ab", "c1") || a == PartialName("x/y", "ac", "c1") || a == PartialName("x/y", "ab", "c2") {
		t.Error("partial names collide")
	}
}

func TestShellQuote(t *testing.T) {
	if got := ShellQuote(`it's $(x)`); got != `'it'\''s $(x)'` {
		t.Errorf("ShellQuote = %s", got)
	}
}

// FuzzCheckName: whatever passes CheckName is a single, safe component.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a", "..", ".messor", "a/b", "x\x00", "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckName(s) != nil {
			return
		}
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00\n\r") ||
			strings.HasPrefix(s, ReservedPrefix) || !utf8.ValidString(s) || len(s) > MaxNameLen {
			t.Fatalf("CheckName accepted %q", s)
		}
	})
}

// FuzzCleanRelPath: an accepted path never climbs out, never is absolute,
// and every component is a valid name.
func FuzzCleanRelPath(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/abs", "a/../../b", "a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := CleanRelPath(s)
		if err != nil {
			return
		}
		if p != s || strings.HasPrefix(p, "/") {
			t.Fatalf("CleanRelPath(%q) = %q", s, p)
		}
		for _, c := range strings.Split(p, "/") {
			if c == ".." || c == "." || c == "" || CheckName(c) != nil {
				t.Fatalf("CleanRelPath(%q) accepted component %q", s, c)
			}
		}
	})
}

// TestHashRangeCommand runs HashRangeCommand under /bin/sh on real files
// (names with spaces and quotes) and compares with Go's SHA-256.
func TestHashRangeCommand(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	var tools []string
	for _, tool := range HashTools {
		out, err := exec.Command("/bin/sh", "-c", "printf messor | "+tool).Output()
		sum := sha256.Sum256([]byte("messor"))
		if err == nil && strings.HasPrefix(string(out), hex.EncodeToString(sum[:])) {
			tools = append(tools, tool)
		}
	}
	if len(tools) == 0 {
		t.Skip("none of the hash tools works here")
	}
	dir := t.TempDir()
	data := make([]byte, 5*HashBlock+777)
	rand.New(rand.NewSource(1)).Read(data)
	names := []string{"plain", "with space", `it's "quoted"`, "-dash $(x) `y`"}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	size := int64(len(data))
	tests := []struct{ off, n int64 }{
		{0, 0},
		{0, 1},
		{0, HashBlock},
		{0, size},
		{HashBlock, HashBlock},
		{HashBlock, 2*HashBlock + 5},
		{3 * HashBlock, size - 3*HashBlock}, // the tail, ending at EOF
		{4 * HashBlock, HashBlock + 777},
		{4096, 3 * HashBlock},          // aligned to 4 KiB only
		{12345, 1000},                  // odd: one byte at a time
		{size, 0},                      // at EOF
		{4 * HashBlock, 2 * HashBlock}, // past EOF: fewer bytes hashed
		{size + HashBlock, 10},         // wholly past EOF: nothing hashed
	}
	for _, tool := range tools {
		for i, name := range names {
			for j, tt := range tests {
				if i > 0 && j > 2 {
					break // the names need only a few
				}
				cmd := HashRangeCommand(tool, filepath.Join(dir, name), tt.off, tt.n)
				out, err := exec.Command("/bin/sh", "-c", cmd).Output()
				if err != nil {
					t.Fatalf("%s: %v", cmd, err)
				}
				lo, hi := min(tt.off, size), min(tt.off+tt.n, size)
				want := sha256.Sum256(data[lo:hi])
				if len(out) < 64 || string(out[:64]) != hex.EncodeToString(want[:]) {
					t.Errorf("%s\n= %.64s, want %x (bytes %d to %d)", cmd, out, want, lo, hi)
				}
			}
		}
	}
}

func TestClaimName(t *testing.T) {
	at := time.Unix(1_790_000_000, 0)
	long := strings.Repeat("é", MaxNameLen/2) // 254 bytes, 2 a character
	for _, name := range []string{"photo.jpg", "~tilde", "a.b.c", ".hidden", long, strings.Repeat("x", MaxNameLen)} {
		claim, err := ClaimName(name, "0123abcd", at)
		if err != nil {
			t.Fatalf("ClaimName(%q): %v", name, err)
		}
		if !strings.HasPrefix(claim, ClaimPrefix) || len(claim) > MaxNameLen || !utf8.ValidString(claim) {
			t.Errorf("ClaimName(%.20q) = %q: not a reserved name of at most %d bytes", name, claim, MaxNameLen)
		}
		if CheckName(claim) == nil {
			t.Errorf("claim %q passes CheckName: it would be carried", claim)
		}
		c, err := ParseClaim(claim)
		if err != nil {
			t.Fatalf("ParseClaim(%q): %v", claim, err)
		}
		if c.Carrier != "0123abcd" || !c.At.Equal(at) {
			t.Errorf("ParseClaim(%q) = %+v", claim, c)
		}
		fits := len(name) <= MaxNameLen-len(ClaimPrefix)-len("0123abcd.")-len(strconv.FormatInt(at.Unix(), 36))-1
		if c.Exact != fits || fits && c.Name != name {
			t.Errorf("ParseClaim(ClaimName(%.20q)) = %+v, exact should be %v", name, c, fits)
		}
		if !fits && (CheckName(c.Name) != nil || !strings.HasPrefix(name, strings.TrimRight(c.Name[:len(c.Name)-9], "~"))) {
			t.Errorf("shortened name %q of %.20q", c.Name, name)
		}
	}
	for _, id := range []string{"", "has.dot", "has/slash", strings.Repeat("a", 17)} {
		if _, err := ClaimName("x", id, at); !errors.Is(err, ErrBadCarrierID) {
			t.Errorf("ClaimName with carrier ID %q: %v", id, err)
		}
	}
	if _, err := ClaimName("../x", "abc", at); err == nil {
		t.Error("ClaimName accepted a bad name")
	}
	for _, s := range []string{"photo.jpg", ".messor.part.0123", ClaimPrefix, ClaimPrefix + "abc", ClaimPrefix + "abc.zz",
		ClaimPrefix + "abc.zz.", ClaimPrefix + "abc.zz...", ClaimPrefix + "abc.zz.a/b",
		ClaimPrefix + "abc.!!.x", ClaimPrefix + "abc.zz." + ClaimPrefix + "abc.zz.x"} {
		if c, err := ParseClaim(s); !errors.Is(err, ErrNotClaim) {
			t.Errorf("ParseClaim(%q) = %+v, %v; want ErrNotClaim", s, c, err)
		}
	}
}

// TestHashBatchEncoding: a hash batch and its reply decode to what was
// encoded; a payload or reply that is cut, has bytes left over, holds
// more than MaxHashBatch items, another count of answers or a digest that
// is not 32 bytes is refused.
func TestHashBatchEncoding(t *testing.T) {
	items := []HashBatchItem{{Path: "messor/inbox/a/f", Length: 4096}, {Path: "", Length: 0}, {Path: "x,y", Length: 1 << 40}}
	b := MarshalHashBatch(items)
	got, err := UnmarshalHashBatch(b)
	if err != nil || len(got) != len(items) {
		t.Fatalf("decoded %v, %v", got, err)
	}
	size := 4 // what a carrier keeps within MaxHashBatchSize
	for i := range items {
		if got[i] != items[i] {
			t.Errorf("item %d: %v, want %v", i, got[i], items[i])
		}
		size += items[i].HashBatchSize()
	}
	if size != len(b) {
		t.Errorf("items sized %d bytes, encoded in %d", size, len(b))
	}
	for _, bad := range [][]byte{nil, b[:len(b)-1], append(append([]byte(nil), b...), 0), MarshalHashBatch(make([]HashBatchItem, MaxHashBatch+1))} {
		if _, err := UnmarshalHashBatch(bad); err == nil {
			t.Errorf("payload of %d bytes decoded", len(bad))
		}
	}
	sum := sha256.Sum256([]byte("x"))
	reply := MarshalHashBatchReply([][]byte{sum[:], nil})
	sums, err := UnmarshalHashBatchReply(reply, 2)
	if err != nil || string(sums[0]) != string(sum[:]) || sums[1] != nil {
		t.Fatalf("reply decoded %x, %v", sums, err)
	}
	for _, bad := range []struct {
		b []byte
		n int
	}{{reply, 1}, {reply, 3}, {reply[:len(reply)-1], 2}, {MarshalHashBatchReply([][]byte{sum[:5]}), 1}} {
		if _, err := UnmarshalHashBatchReply(bad.b, bad.n); err == nil {
			t.Errorf("reply of %d bytes for %d items decoded", len(bad.b), bad.n)
		}
	}
}
