package agent

import (
	"os"
	"syscall"

	"github.com/pkg/sftp"
)

// statVFS reports on the file system holding f, as statvfs(3) would.
func statVFS(f *os.File) (*sftp.StatVFS, error) {
	var st syscall.Statfs_t
	if err := fstatfs(f, func(fd int) error { return syscall.Fstatfs(fd, &st) }); err != nil {
		return nil, err
	}
	return &sftp.StatVFS{
		Bsize:   uint64(st.Bsize),
		Frsize:  uint64(st.Frsize),
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Favail:  st.Ffree,
		Fsid:    uint64(uint32(st.Fsid.X__val[0]))<<32 | uint64(uint32(st.Fsid.X__val[1])),
		Flag:    uint64(st.Flags) & (stRdonly | stNosuid),
		Namemax: uint64(st.Namelen),
	}, nil
}
