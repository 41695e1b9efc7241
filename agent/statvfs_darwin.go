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
	var flag uint64
	if st.Flags&0x1 != 0 { // MNT_RDONLY
		flag |= stRdonly
	}
	if st.Flags&0x8 != 0 { // MNT_NOSUID
		flag |= stNosuid
	}
	return &sftp.StatVFS{
		Bsize:   uint64(st.Iosize),
		Frsize:  uint64(st.Bsize),
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Favail:  st.Ffree,
		Fsid:    uint64(uint32(st.Fsid.Val[0]))<<32 | uint64(uint32(st.Fsid.Val[1])),
		Flag:    flag,
		Namemax: 255,
	}, nil
}
