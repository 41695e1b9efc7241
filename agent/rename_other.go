//go:build !linux

package agent

import "os"

// renameNoReplace: only Linux has renameat2.
func renameNoReplace(*os.Root, string, string) error { return errNoRenameat2 }
