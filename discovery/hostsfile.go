package discovery

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/messor-sync/messor/protocol"
)

// LineError is a problem with one line of a configuration file.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// HostLine is one host of the hosts file.
type HostLine struct {
	Name string
	// Remote: the line says "NAME remote": the host may be visited at an
	// address not on a local network (see LocalAddr).
	Remote bool
}

// ParseHostsFile reads a pickup hosts file: one host name a line, '#' starts
// a comment, blank lines are ignored. Good names are returned in order,
// without duplicates, even when other lines are bad; each bad line yields a
// *LineError ("file:line: ...") in errs. name is used in those messages.
func ParseHostsFile(r io.Reader, name string) (hosts []string, errs []error) {
	lines, errs := ParseHostLines(r, name)
	for _, l := range lines {
		hosts = append(hosts, l.Name)
	}
	return hosts, errs
}

// ParseHostLines is ParseHostsFile with each name's mark: a line may be
// "NAME remote".
func ParseHostLines(r io.Reader, name string) (hosts []HostLine, errs []error) {
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		host, remote := line, false
		if f := strings.Fields(line); len(f) == 2 && f[1] == "remote" {
			host, remote = f[0], true
		} else if len(f) > 1 {
			errs = append(errs, &LineError{name, n, fmt.Errorf("%q: one host name a line (then, optionally, \"remote\")", line)})
			continue
		}
		line = host
		if err := protocol.CheckHostName(line); err != nil {
			errs = append(errs, &LineError{name, n, err})
			continue
		}
		if seen[line] {
			continue
		}
		seen[line] = true
		hosts = append(hosts, HostLine{line, remote})
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &LineError{name, n + 1, err})
	}
	return hosts, errs
}

// ReadHostsFile reads the hosts file at path with ParseHostsFile. A missing
// file is no hosts and no error.
func ReadHostsFile(path string) (hosts []HostLine, errs []error, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("hosts file: %w", err)
	}
	defer f.Close()
	hosts, errs = ParseHostLines(f, path)
	return hosts, errs, nil
}
