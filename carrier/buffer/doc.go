// Package buffer is the carrier's local store of carried files: what a
// pickup took from a source's outbox and a dropoff has not yet delivered.
// It is crash-safe: a carrier killed at any moment loses no carried file
// (see Crash safety and recovery).
//
// # Layout on disk
//
// A buffer is one directory (by default $XDG_DATA_HOME/messor/buffer, see
// DefaultDir; never under the messor/ directory an agent serves):
//
//	index.db      the index (bbolt): entries, objects and their uses,
//	              the outbox files carried (origins), record file counts;
//	              its file lock lets one run at a time open the buffer
//	id            the buffer's random identity (Buffer.ID)
//	objects/xx/H  content-addressed objects: the content whose SHA-256 is
//	              H (hex), under its first two hex digits; no names
//	partial/      resumable partial downloads, one per origin (a tag of the
//	              source host, then a hash of the origin: Origin.PartialName)
//	records/      batch record files (NAME.jsonl): one JSON line per
//	              committed entry, for Recover to rebuild the index from
//	entries/      one-entry record files (*.json) of buffers written by
//	              messor before 2026-11-26, still read and released
//	quarantine/   what an open or a recover found and could not place:
//	              objects nothing names, record files naming nothing that
//	              could be indexed; kept, never deleted
//
// The carrier keeps its own files beside these in the same directory
// (receipts, notes of leases); the buffer does not touch them.
//
// # Commit and release
//
// A pickup reserves its file's bytes against the limit (Reserve; the bytes
// of the file's own partial count toward it), streams it into its partial
// (PartialPath), and commits it (Commit, or CommitData for a small file held
// in memory) only after it checked what it read; only then does it remove
// the outbox file. Commit moves the partial into place as the object (or
// drops it when that content is stored already), writes the entry's record,
// makes both durable, and records the entry and its origin in the index.
// The index's writes go through one goroutine that groups whatever is
// waiting: one record file, one filesystem sync and one index transaction
// for a batch of commits.
//
// A dropoff releases an entry (Release) once the delivered file is durable
// on its destination: the entry, its record line and, once no entry uses
// it, its object go in one index transaction. Release and ForgetCarried are
// queued, not waited for (Flush waits): lost in a crash, the entry is found
// delivered already on the next visit, and a stale carried record makes a
// later visit remove an identical outbox file without carrying it twice.
// Carried trusts such a record only while the buffer still holds that very
// version, so a different file that shares path, size and mtime is never
// removed uncarried.
//
// # Crash safety and recovery
//
// Every committed entry has a record, written and made durable before the
// index commits it and dropped after the index releases it: objects carry
// no names, so the records are what lets Recover rebuild a lost or corrupt
// index without losing a carried file (see record.go for how record files
// are kept to live entries across releases and crashes).
//
// Open reconciles the index with the files and never deletes an object or
// a record file a record names: record files a release left naming
// delivered entries (marked in its transaction) are rewritten; record
// files the index does not know (a crash between writing one and the index
// transaction, or an index that lost them) have their entries indexed again
// where the object verifies; objects still unknown then are moved to
// quarantine/. Open fails with ErrBusy while another run holds the buffer,
// and with ErrIndexCorrupt when the index is damaged, or missing or empty
// beside records of carried files.
//
// Recover (`messor recover`) rebuilds the index after ErrIndexCorrupt from
// the records: every entry whose object is present and verifies (SHA-256).
// The new index is built beside the old one, made durable and renamed over
// it; killed at any moment, it leaves the old index or the new one whole,
// and never removes a record or an object. Nothing delivered comes back,
// except where the index lost a record file's mark for a rewrite with
// it: such a file may name delivered entries, which are then delivered
// again (found at their destination, or left as a second copy). The
// outbox copies of files committed but not yet removed are not
// remembered: the next pickup carries such a file again and, its content
// being stored already, keeps one copy. Objects no record names go to
// quarantine/; a missing one a record names is taken back from there where
// a copy verifies.
//
// The buffer imports nothing of the carrier's; the rules for what may be
// carried (host names, paths) are package protocol's.
package buffer
