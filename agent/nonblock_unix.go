//go:build unix

package agent

import "syscall"

// nonBlock makes opening a FIFO return at once instead of waiting for a
// writer (reads on a regular file are unaffected).
const nonBlock = syscall.O_NONBLOCK
