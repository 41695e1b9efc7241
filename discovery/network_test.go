package discovery

import (
	"strings"
	"testing"
)

func TestNMMetered(t *testing.T) {
	for out, want := range map[string]bool{
		"GENERAL.METERED:no\nGENERAL.METERED:unknown\n": false,
		"GENERAL.METERED:no\nGENERAL.METERED:yes\n":     true,
		"GENERAL.METERED:yes (guessed)\n":               true,
		"":                                              false,
	} {
		if got := nmMetered([]byte(out)); got != want {
			t.Errorf("%q: metered %v, want %v", out, got, want)
		}
	}
}

func TestHostsFileRemote(t *testing.T) {
	lines, errs := ParseHostLines(strings.NewReader("far remote\nnear\nbad extra words\n"), "hosts")
	if len(lines) != 2 || !lines[0].Remote || lines[1].Remote || len(errs) != 1 {
		t.Errorf("lines %+v, errs %v", lines, errs)
	}
}
