// Package agent is the optional host daemon behind `messor agent`.
//
// An [Agent] serves the host's messor directory over an embedded SSH server
// (github.com/gliderlabs/ssh) whose only subsystem is SFTP
// (github.com/pkg/sftp), so that a carrier talks to it exactly as it talks
// to a stock OpenSSH sshd configured with `Subsystem sftp internal-sftp`:
//
//   - SFTP paths are relative to a virtual login directory "/" that holds a
//     single directory, "messor", which is [Config.Root] on the host and
//     holds only the layout's three areas, outbox/, inbox/ and sent/ (the
//     source's ledgers of what was delivered). So
//     "messor/outbox/<dest>/file" is Root/outbox/<dest>/file, and nothing
//     else is visible: not what lies outside Root, nor anything else in
//     Root (a carrier's buffer kept there by an older messor). Each area is
//     an [os.Root] of its own: "..", absolute paths and symbolic links
//     cannot reach out of it, and a rename cannot move a file from one area
//     to the other. Root, outbox/ and inbox/ themselves cannot be removed,
//     renamed or chmod'ed.
//   - Names beginning with ".messor" ([protocol.ReservedPrefix]) are refused
//     unless they are delivery partials (".messor.part.*", see
//     [protocol.PartialName]), which carriers create, write, stat, rename and
//     remove while delivering, or outbox claims (".messor.claim.*", see
//     [protocol.ClaimName]), which carriers rename, stat and remove while
//     picking up, or leases, keep markers and receipts
//     ([protocol.LeasePrefix], [protocol.KeepMarker],
//     [protocol.ReceiptsDirName]).
//   - An open asking to append (SSH_FXF_APPEND) appends in sent/ only, as
//     OpenSSH's sftp-server does, so that two carriers appending to one
//     ledger at once lose no line; elsewhere writes land at their offsets.
//   - SSH_FXP_RENAME never replaces an existing file (on Linux one atomic
//     renameat2 with RENAME_NOREPLACE; elsewhere it links the new name and
//     unlinks the old one, as OpenSSH does); posix-rename@openssh.com
//     replaces. statvfs@openssh.com and fsync@openssh.com are offered, the
//     latter really syncing the file to stable storage; a directory opened
//     for reading can be synced too, which makes the names put in it
//     durable. Symbolic and hard links cannot be created.
//   - Files and directories are created with the permissions the open or
//     mkdir asks for (the rwx bits), else private: 0600 and 0700 (less the
//     umask). Setstat sets times, sizes and the rwx bits of files and
//     directories (never setuid, setgid or sticky); owners cannot change.
//
// Carriers authenticate by public key only, against an OpenSSH
// authorized_keys file that is re-read at every login. There is no shell, no
// exec, no pty, no port or agent forwarding. The line messor key prints,
// restrict,command="internal-sftp" <key>, is accepted; from= (against the
// client's address, never a resolved name, as sshd with UseDNS no) and
// expiry-time= are honoured; a line with an option the agent cannot honour
// (another command=, cert-authority, pty, environment=, ...) lets nobody in
// and is logged with its line number. The host key is kept on disk
// ([LoadOrCreateHostKey]) so the fingerprint a carrier pinned stays valid
// across restarts. What one client can hold is bounded: 64 connections not
// yet logged in (30 s to log in), 10 sessions per connection (as sshd's
// MaxSessions), 1,024 open files per SFTP session and 4,096 in all.
//
// Besides SFTP the agent answers the global requests
// [protocol.HashRangeRequest] with the SHA-256 of a prefix of a file, and
// [protocol.HashSliceRequest] with that of a slice of one, and
// [protocol.HashBatchRequest] with the SHA-256 of the prefixes of many files
// at once (each item answered exactly as hash-range answers it alone, and
// none of more than [protocol.MaxHashBatchLength] bytes:
// TestHashBatchConfinedAsHashRange, TestHashBatch), under the same
// confinement rules, so a carrier can check a
// partial before resuming it, verify a big upload piece by piece while it
// goes on, and verify many small files picked up in one round trip, without
// reading them back.
//
// The package imports neither the carrier nor any mDNS library: advertising
// is a hook, [Config.Advertise], that the command wires to discovery.
package agent
