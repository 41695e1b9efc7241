package agent

import (
	"errors"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames oldRel to newRel (relative to root) in one atomic
// step that fails with EEXIST when newRel exists: renameat2 with
// RENAME_NOREPLACE. Unlike a link then an unlink, no file saved over oldRel
// in between can be unlinked by mistake. errNoRenameat2 where the kernel or
// the file system cannot.
func renameNoReplace(root *os.Root, oldRel, newRel string) error {
	od, err := root.Open(path.Dir(oldRel))
	if err != nil {
		return err
	}
	defer od.Close()
	nd, err := root.Open(path.Dir(newRel))
	if err != nil {
		return err
	}
	defer nd.Close()
	err = unix.Renameat2(int(od.Fd()), path.Base(oldRel), int(nd.Fd()), path.Base(newRel), unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoRenameat2
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldRel, New: newRel, Err: err}
	}
	return nil
}
