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
// and buffer are empty. It reads receipts and ledgers too (receipts.go): no
// ledger line or receipt, on a host or in a buffer, names a file not
// delivered with that content; a file in a keep-mode outbox leaves it only
// once its source's ledger names that content; no inbox holds a second
// copy of identical content; and, at the end, every receipt is home
// (CheckHome). A World may hold several carriers' buffers (newCrew: a HOME,
// key and buffer per carrier, sharing the hosts), and earlier versions of a
// file saved again after it was carried (Replace).
//
// TestFleet runs N hosts and C carriers for V visits (MESSOR_FLEET_HOSTS,
// MESSOR_FLEET_CARRIERS, MESSOR_FLEET_VISITS) and logs the figures
// docs/BENCHMARKS.md reports.
package faults
