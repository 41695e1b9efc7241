package conformance

import "testing"

// TestOpenSSH runs the suite against stock OpenSSH sshd.
func TestOpenSSH(t *testing.T) { Run(t, SSHD(false)) }

// TestOpenSSHNoExec runs it against an sshd that offers nothing but SFTP,
// so every check reads data back instead of hashing on the host.
func TestOpenSSHNoExec(t *testing.T) { Run(t, SSHD(true)) }
