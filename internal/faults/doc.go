// Package faults proves the carrier's promise, "nothing lost, nothing
// duplicated, nothing half-written visible", under faults: a flaky or
// stalled link, a carrier killed at random moments, full disks, sources that
// change while read or cannot be removed, a hostile SFTP server, and a
// corrupt buffer index. The tests run against real OpenSSH sshd hosts (root
// required) through the user-space proxy in internal/flaky.
//
// [World] is the invariant checker the tests share: given what was put into
// the outboxes it checks, at any instant, that every file is intact in at
// least one of outbox, buffer and inbox, that no inbox shows a partial or
// corrupted file under a final name or one file under two names, and, once
// the dust settles, that every inbox equals what was sent and the outboxes
// and buffer are empty.
package faults
