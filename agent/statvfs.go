//go:build linux || darwin

package agent

import (
	"fmt"
	"os"
)

// statvfs f_flag bits as the statvfs@openssh.com reply carries them.
const (
	stRdonly = 0x1
	stNosuid = 0x2
)

// fstatfs runs fn with f's descriptor without putting f in blocking mode.
func fstatfs(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("statfs %s: %w", f.Name(), err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("statfs %s: %w", f.Name(), err)
	}
	if ferr != nil {
		return fmt.Errorf("statfs %s: %w", f.Name(), ferr)
	}
	return nil
}
