package protocol

import "testing"

func TestMatchPattern(t *testing.T) {
	for _, c := range []struct {
		s, p string
		want bool
	}{
		{"", "", true},
		{"", "*", true},
		{"a", "", false},
		{"hosta", "host?", true},
		{"host", "host?", false},
		{"hostab", "host?", false},
		{"10.0.0.7", "10.0.*", true},
		{"10.1.0.7", "10.0.*", false},
		{"laptop.lan", "*.lan", true},
		{"laptop.lan.evil", "*.lan", false},
		{"abcabd", "*ab?", true},
		{"abc", "a**c", true},
		{"abc", "a*?*c", true},
		{"ac", "a*?*c", false},
		{"Hosta", "hosta", false},
	} {
		if got := MatchPattern(c.s, c.p); got != c.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", c.s, c.p, got, c.want)
		}
	}
}
