//go:build !unix

package agent

// nonBlock: no FIFOs to worry about here.
const nonBlock = 0
