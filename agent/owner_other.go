//go:build !unix

package agent

import "io/fs"

// ownerOK: file ownership is not checked where it is not a uid.
func ownerOK(fi fs.FileInfo) (ok bool, uid int) { return true, -1 }
