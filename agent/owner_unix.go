//go:build unix

package agent

import (
	"io/fs"
	"os"
	"syscall"
)

// ownerOK reports whether fi belongs to the user the agent runs as, or to
// root, as sshd's StrictModes asks of the files that decide who logs in.
func ownerOK(fi fs.FileInfo) (ok bool, uid int) {
	st, isStat := fi.Sys().(*syscall.Stat_t)
	if !isStat {
		return true, -1
	}
	return st.Uid == 0 || int(st.Uid) == os.Geteuid(), int(st.Uid)
}
