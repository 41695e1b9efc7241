package discovery

import (
	"errors"
	"strings"
	"testing"
)

func TestParseHostsFile(t *testing.T) {
	in := "# pickup hosts\n\nalpha\n  beta   # the NAS\nalpha\nnot valid\n../etc\ngamma.lan\n\xff\n"
	hosts, errs := ParseHostsFile(strings.NewReader(in), "hosts")
	if strings.Join(hosts, ",") != "alpha,beta,gamma.lan" {
		t.Errorf("hosts = %v", hosts)
	}
	var lines []int
	for _, e := range errs {
		var le *LineError
		if !errors.As(e, &le) || le.File != "hosts" {
			t.Fatalf("error %v is not a LineError for hosts", e)
		}
		lines = append(lines, le.Line)
	}
	if len(lines) != 3 || lines[0] != 6 || lines[1] != 7 || lines[2] != 9 {
		t.Errorf("bad lines reported: %v (%v)", lines, errs)
	}
	if !strings.HasPrefix(errs[0].Error(), "hosts:6: ") {
		t.Errorf("message %q", errs[0])
	}
}

func TestReadHostsFileMissing(t *testing.T) {
	hosts, errs, err := ReadHostsFile(t.TempDir() + "/none")
	if hosts != nil || errs != nil || err != nil {
		t.Fatalf("missing file: %v %v %v", hosts, errs, err)
	}
}

func FuzzParseHostsFile(f *testing.F) {
	f.Add("alpha\n# c\nbeta # x\n")
	f.Add("\x00\n..\n/x\n")
	f.Fuzz(func(t *testing.T, s string) {
		hosts, _ := ParseHostsFile(strings.NewReader(s), "f")
		seen := map[string]bool{}
		for _, h := range hosts {
			if err := protocolCheck(h); err != nil || seen[h] {
				t.Fatalf("returned bad or duplicate host %q: %v", h, err)
			}
			seen[h] = true
		}
	})
}
