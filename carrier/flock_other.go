//go:build !unix

package carrier

// inUse cannot tell on this platform; bbolt's own lock still guards runs.
func inUse(dbPath string) bool { return false }
