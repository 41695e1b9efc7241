//go:build !linux && !darwin

package agent

import (
	"fmt"
	"os"

	"github.com/pkg/sftp"
)

func statVFS(f *os.File) (*sftp.StatVFS, error) {
	return nil, fmt.Errorf("statvfs %s: %w", f.Name(), sftp.ErrSSHFxOpUnsupported)
}
