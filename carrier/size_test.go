package carrier

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"1048576", 1 << 20}, {"500MiB", 500 << 20}, {"2GiB", 2 << 30}, {"1.5GB", 1_500_000_000},
		{"10kb", 10_000}, {"10KiB", 10 << 10}, {"3 MiB", 3 << 20}, {"1g", 1 << 30}, {"100B", 100}, {"1TB", 1e12},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "-1MiB", "lots", "1.2.3GB", "NaN", "Inf", "1e30GB", "5 parsecs"} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"500MiB", "1.5GB", "12", "-3", "1e3kb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB"} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestPlan(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	c := func(p string, size int64, age int) candidate {
		return candidate{Dest: "d", Path: p, Size: size, MTime: base.Add(time.Duration(-age) * time.Minute)}
	}
	cands := []candidate{c("new", 10, 1), c("oldest", 40, 10), c("huge", 1000, 9), c("mid", 30, 5), c("small", 5, 2)}
	none := func(candidate) int64 { return 0 }
	take, wait := plan(cands, 80, none)
	var got []string
	for _, x := range take {
		got = append(got, x.Path)
	}
	// oldest first: oldest(40), huge skipped, mid(30) -> 70, small(5) -> 75, new(10) does not fit
	want := []string{"oldest", "mid", "small"}
	if len(got) != len(want) {
		t.Fatalf("take %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("take %v, want %v", got, want)
		}
	}
	if len(wait) != 2 || wait[0].Path != "huge" || wait[1].Path != "new" {
		t.Fatalf("wait %v", wait)
	}
	if take, _ := plan(cands, 0, none); len(take) != 0 {
		t.Fatal("took files with no room")
	}
	if take, _ := plan([]candidate{c("empty", 0, 1)}, 0, none); len(take) != 1 {
		t.Fatal("an empty file needs no room")
	}
	// A partial holding 900 of huge's 1000 bytes (counted as used, so
	// free is small) needs room for the rest only.
	held := func(x candidate) int64 {
		if x.Path == "huge" {
			return 900
		}
		return 0
	}
	if take, _ := plan([]candidate{c("huge", 1000, 9)}, 100, held); len(take) != 1 {
		t.Fatal("a partial's own bytes were counted against its file")
	}
	if take, _ := plan([]candidate{c("huge", 1000, 9)}, 99, held); len(take) != 0 {
		t.Fatal("took a file whose rest does not fit")
	}
}
