// Package protocol is the contract between a messor carrier and the hosts it
// visits: the on-host layout, the rules for names, the partial/commit rules
// of one file's life, the content hash, and the mDNS service an agent
// advertises. It imports nothing of messor's own, so both sides (carrier and
// agent) can depend on it.
//
// # Layout on a host
//
// Paths are relative to the SFTP login directory: the user's home on a stock
// OpenSSH sshd, the agent's virtual root when the host runs `messor agent`.
// An agent serves messor/outbox/, messor/inbox/ and messor/sent/ and
// nothing else: no other entry of messor/ can be listed, opened, changed,
// removed or renamed into or out of, not even through a symbolic link (a
// carrier's buffer never lives there: it defaults to
// $XDG_DATA_HOME/messor/buffer).
//
//	messor/outbox/<dest>/<path>   files waiting to be carried to host <dest>
//	messor/inbox/<source>/<path>  files delivered from host <source>
//	messor/sent/<dest>.log        the ledger: what arrived at <dest> (see Receipts)
//	messor/inbox/.messor-receipts/<source>/<name>  receipts of what arrived from <source>
//	messor/outbox/.messor-keep, messor/outbox/<dest>/.messor-keep  keep mode
//	messor/outbox/<dest>/<dir>/.messor.lease.<name>  the lease of a kept file
//
// <dest> and <source> are host names as carriers know them (a hosts-file
// entry or ssh alias, or an agent's advertised name) and must satisfy
// [CheckHostName]. Every component of <path> must satisfy [CheckName]. Names
// that begin with ".messor" ([ReservedPrefix]) belong to messor (partial
// uploads, outbox claims, leases, keep markers, receipts); they are never
// carried and never count as delivered.
//
// # The life of one file
//
//  1. Pickup lists messor/outbox/ (without following symlinks), skips what is
//     not a regular file, what has a bad name, and what was modified in the
//     last few seconds (still being written), then plans oldest first what
//     fits the carrier's buffer limit (the bytes of a file's own partial
//     download count toward it, so a cut-off file resumes within the
//     limit that took it). A destination directory that cannot
//     be listed is reported and passed over. A listing holds a bounded
//     number of entries (and bytes of replies); a bigger outbox is carried
//     in rounds, each listing again what is left, at most 1,000 rounds a
//     visit (a writer feeding the outbox faster than it is carried waits
//     for the next visit). Each file is streamed into
//     a resumable partial in the carrier's buffer and hashed with SHA-256
//     ([HashName]) on the way.
//  2. The carrier checks that the source's size and mtime did not change
//     while it was read (and compares a server-side hash where the host
//     offers one), syncs the data, commits it to its buffer index, and only
//     then removes the file from the outbox, by a claim (see Removing a
//     carried file). A carrier that already holds a committed copy of the
//     same (source, dest, path, size, mtime) removes the outbox file the same
//     way without taking a second copy. A partial left by an
//     earlier visit is resumed only from a prefix the host hashed the same
//     (a range hash), and the file is then hashed on the host again
//     before the source is removed; a host that cannot hash has the file
//     read whole again, compared with the partial as it comes. Size and
//     mtime alone never vouch for a prefix read on an earlier visit.
//     Where the source is hashed on the host (every file from an agent,
//     a resumed download from any host that hashes), a file of at least
//     two slices (see Range hashes) is hashed slice by slice while it
//     streams: the host is asked for a slice's digest once the carrier has
//     received its last byte, at most two outstanding, and each must equal
//     the carrier's digest of the bytes it received; a resumed download's
//     prefix is hashed on the host again after the last byte. So every
//     byte kept was hashed on the host after the carrier had it, and the
//     earlier visit's after this visit's read: a change in place (mtime
//     restored or not) to bytes not yet hashed is seen. A change to a
//     slice after the host hashed it, with size and mtime kept, is not
//     (the whole-file hash after the last byte saw it when made before
//     that hash ran). A file of fewer slices, or a host that refuses a
//     slice, is hashed whole after the last byte.
//  3. Dropoff makes the missing directories of inbox/<source>/<path> with
//     mode 0700 (a mkdir, then a setstat: the SFTP client sends no mode),
//     then uploads into a hidden partial beside the final name
//     ([PartialName]), created asking for mode 0600 in SSH_FXP_OPEN,
//     whose mode it then sets to the source's permission
//     bits (rwx only: never setuid, setgid or sticky; 0600 for a file
//     carried by a messor that did not record them) plus its owner's read
//     and write, resuming from a prefix it has verified (a range hash).
//     A small file (at most 256 KiB) is never resumed: its partial, as a
//     big file's with no regular partial to resume, is created
//     exclusively, and one already there is removed first (it may be a
//     hard link to the file delivered, left by a carrier killed between
//     placing it and removing the partial, or a symbolic link: writing
//     through it would change another file); where its delivery fails,
//     the carrier removes it. A big file's partial is not resumed, but
//     removed, where it agrees in size, mode, owner and mtime with a file
//     in its directory (under the final name, a conflict name, or any
//     other: SFTP shows no inode numbers), or, on a stock host with exec,
//     where `stat -c %h` says it has another name anywhere (a delivered
//     file its user moved out of the inbox). A host with neither exec nor
//     the agent cannot show such a moved file.
//     After the last write it sets the source's mtime, syncs the partial
//     (fsync@openssh.com where offered), verifies the whole content hash (a
//     big file piece by piece while it is being uploaded: see Range
//     hashes), sets the source's exact bits, then renames it to the final
//     name with a rename that never replaces an existing file (small
//     files to a stock host may be proven in groups instead, not read back:
//     see Delivering small files in batches). If the
//     final name exists with identical content, the file counts as
//     delivered; if it exists with different content, both are kept: the
//     new one under [ConflictName].
//  4. The carrier makes the new name durable: it opens the directory for
//     reading and sends fsync@openssh.com on that handle (OpenSSH's
//     sftp-server and the agent sync the directory), and every directory
//     above it up to messor/inbox (one found there may have been made by a
//     carrier killed before it synced its parent), as it did for the parent
//     of each directory it made. Files put into one directory at about the
//     same time share one sync. Only then is the carrier's buffer
//     entry released. A host that offers no fsync@openssh.com, or refuses
//     it on a directory, keeps the file, but the carrier keeps its entry
//     until a later visit finds the file there with identical content.
//
// # Removing a carried file
//
// SFTP has no conditional remove, and a user may save a new version over an
// outbox file (an editor writes a temp file and renames it over the name) at
// any moment. So a carrier never removes an outbox file by its own name:
//
//  1. It claims it: renames it, in the same directory, to the hidden name
//     [ClaimName] (".messor.claim.<carrier ID>.<time>.<name>", the carrier ID
//     being its buffer's ID) with SSH_FXP_RENAME, which never replaces a
//     file (OpenSSH links the new name and unlinks the old one; the agent
//     renames with RENAME_NOREPLACE where it can). posix-rename@openssh.com,
//     which replaces, is never used here.
//  2. It looks at the claimed file (lstat): if its size and mtime are those
//     of the version it carried, it removes the claim. A new version saved
//     after the claim lands beside it under the file's own name and is never
//     touched.
//  3. If the claimed file is another version (saved between the carrier's
//     last look and the claim), it puts it back under its own name, again
//     never replacing a file; if that name is taken meanwhile by a newer
//     version, under the first free [ConflictName], so both are kept. It is
//     carried on a later visit.
//
// A carrier that stops between 1 and 3 leaves a claim. At the start of each
// visit a carrier settles the claims it lists ([ParseClaim]): its own are
// removed when it holds their version (same source, dest, path, size and
// mtime) and put back otherwise; another carrier's are put back once older
// than an hour, or dated more than an hour ahead of the settling carrier's
// clock (that carrier is taken for lost; should it hold a copy, the
// destination's identical-content rule keeps the duplicate from arriving
// twice). A claim already gone when it is put back was settled by another
// carrier at the same moment: nothing to do. A name too long to fit in a
// claim name is shortened in it (with a hash); a carrier finds the full name
// of its own such claim among the files it recorded as carried, and
// another carrier's is put back under the shortened name. What this cannot guard: a writer that keeps a file open
// and writes into it in place after the claim was looked at, and, on an
// OpenSSH host, the instant between the link and the unlink inside its
// rename (a version saved over the name right then is unlinked).
//
// # Receipts and keep mode
//
// Receipts are always on. Once the files of a dropoff are durable (step 4
// above; identical content found there counts too), the carrier writes one
// receipt per source: first into its buffer (synced), then on the
// destination as messor/inbox/.messor-receipts/<source>/<name>
// ([ReceiptDir], [ReceiptName]: "<unix seconds, base 36>.<carrier
// ID>.<16 hex digits of the content's SHA-256>.receipt"), by a partial
// beside it, synced, renamed into place and the directories synced, and
// only then lets go of its copies. A receipt is text ([FormatReceipt]):
//
//	messor-receipt 1
//	source <source>
//	dest <dest>
//	<delivered-at RFC 3339> <size> <mtime, unix seconds> <sha256> <carrier ID> <path>
//
// one line per file, the path last (it may hold spaces, never a newline).
// [ParseReceipt] checks every name in it ([CheckHostName], [CleanRelPath]),
// and a carrier takes a receipt only from the directory of the source it
// names, on the destination it names: a receipt can name nothing outside
// outbox/<dest>/ on its source.
//
// On every visit to a host (pickup, dropoff, sync; in a pickup after the
// claims are settled and before anything is carried) a carrier:
//
//  1. hands over the receipts it holds whose source is this host: it reads
//     messor/sent/<dest>.log ([LedgerPath]), appends the lines it lacks
//     ([LedgerLine]: "<delivered-at> <size> <sha256> <carrier ID> <path>",
//     one per path and content) with an append (SSH_FXF_APPEND, whole
//     lines in one write of at most 32 KiB), and syncs it (and messor/sent/
//     when it made it); then, where that destination's outbox is in keep
//     mode, removes each receipted version (below); then forgets the
//     receipts, remembering that they went home;
//  2. collects the receipts found on this host for other sources (at most
//     16 MiB of them from one destination, each counted as at least 4
//     KiB), and removes from it those it handed over itself and those
//     older than 30 days by the time in their names and by the host's own
//     clock (their mtimes against a file made there then), so a carrier
//     whose clock is far ahead removes none still to go home. A carrier
//     keeps a receipt 30 days from when it took it, by its own clock.
//     A receipt partial a day old by the host's clock (left by a carrier
//     killed while writing it) is removed; removing one still being
//     written only fails that write: its carrier holds the receipt in its
//     buffer and takes it home itself.
//
// Two carriers appending at once may write the same line twice, and a
// carrier killed between appending and forgetting appends nothing the next
// time (the lines are there): a ledger is read as a set of lines keyed by
// path and hash ([ReadLedger]), and a line cut short by a crash is passed
// over; a carrier appending to a ledger whose last line has no newline
// begins with one, so its own lines stay whole.
//
// Keep mode: a regular file named [KeepMarker] in messor/outbox/ (every
// destination) or messor/outbox/<dest>/ (that one) turns the blackhole off.
// Pickup then carries a file as before, leaves it in place, and writes
// beside it a lease ([LeaseName]: ".messor.lease.<name>", a name too long
// for that shortened as in a claim name, after ".messor.lease~"):
//
//	messor-lease 1
//	carrier <carrier ID>
//	expires <RFC 3339>
//	size <bytes>
//	mtime <unix seconds>
//	sha256 <hex>
//
// A carrier passes over a file under a live lease for its version (same
// size and mtime, not expired), its own included, and never carries twice a
// file it still holds. A lease that expired (the carrier was lost), that
// names another version (the file was saved again), or that is not a lease
// (garbage, cut short) is none: the file is carried again, and the
// destination's identical-content rule keeps it from arriving twice. A
// receipt removes a kept file only when the file has the receipt's size and
// mtime and, hashed on the host once claimed (the claim of "Removing a
// carried file"), its SHA-256, so a version saved meanwhile, even with that
// size and mtime, is put back, never removed; the lease goes with it. A
// receipt's path is followed through directories only: a symlink on the way
// (a directory moved out of the outbox) is never followed. A lease replaces
// what stands under its name (removed, then created exclusively: never
// written through a symlink). A file whose outbox left keep mode takes its
// lease along when it is carried. A receipt whose removals cannot all be
// settled is kept for the next visit; a claim of its own that a carrier
// finds in a keep-mode outbox goes back (the receipt claims again). An outbox in keep mode bigger than
// one listing (see step 1 of a file's life) is carried as far as its first
// listing reaches; the rest waits until receipts have removed what was
// carried.
//
// What this cannot guard: a file rewritten in place with its size and mtime
// restored while leased is taken for the leased version (passed over until
// its lease ends, or its receipt comes back and finds it another); clocks: a carrier whose clock runs far ahead writes
// leases that last longer, and one far behind takes expired leases for
// live. A receipt lost with its carrier before it reached the destination
// is made again when the file is carried again after its lease. A receipt
// is the destination's word: a destination (its user, or anyone who can
// write its inbox) can write a receipt for a file it never got, and with
// the file's size, mtime and SHA-256 have it removed from a keep-mode
// outbox; another host cannot, as a carrier takes receipts only from the
// destination they name.
//
// # Range hashes
//
// To confirm a partial before resuming it, and to verify a delivered file,
// the carrier asks the host for the SHA-256 of the first n bytes of a file:
//
//   - on a messor agent (its SSH server version contains [AgentVersionTag]),
//     with the global SSH request [HashRangeRequest] carrying a
//     [HashRangeMsg]; the reply payload is the 32-byte digest. Small
//     files (up to [MaxHashBatchLength], 256 KiB) go in batches instead,
//     in the global request [HashBatchRequest] ([MarshalHashBatch]; the
//     reply holds each item's digest, or nothing for an item refused): an
//     agent answers global requests one at a time, a round trip each, so
//     a carrier's workers verifying many small files ask together, the
//     hashes asked for while one batch is on the way going in the next, at
//     most [MaxHashBatch] items and [MaxHashBatchSize] bytes a request (a
//     bigger SSH packet ends the connection). An agent that refuses the
//     batch (older than it) is asked [HashRangeRequest] per file;
//   - on a stock host, with [HashCommand] (POSIX head, and OpenSSL or
//     sha256sum: [HashTools]), run after an echo so that the last line of
//     its output begins with the hex digest (what a login shell prints
//     before it, a banner, is ignored); a host where the probe finds no
//     tool working behind head is read back. The commands of one
//     connection run in one long-lived helper session, `exec sh -s`, so
//     that a slow login shell starts once: each command goes on the
//     helper's input as one line, in a subshell reading /dev/null, and
//     its reply ends with a line "<marker> <seq> <exit status>", the
//     marker random per helper. Where the helper does not start or
//     answer (no exec, a restricted key, a shell without sh -s) or dies,
//     each command runs in an exec session of its own, as the only way
//     before;
//   - failing both, by reading the bytes back over SFTP. That is the case
//     on a stock host where the carrier's key is authorized as
//     restrict,command="internal-sftp" (what messor key prints): the probe
//     command gets internal-sftp's refusal (or, for a forced sftp-server,
//     no output), never a digest.
//
// A big upload is verified while it goes on: the carrier asks for the
// SHA-256 of each piece just written (a slice: n bytes at an offset), with
// the global request [HashSliceRequest] carrying a [HashSliceMsg] on an agent
// (an older agent refuses it, and the carrier falls back to the whole-file
// hash), or [HashRangeCommand] (POSIX dd and head), run as above, on a
// stock host whose probe shows dd stopping at count= and head -c cutting
// (else the whole file is verified), and compares each with the same slice of its own copy, whose whole
// SHA-256 it checks against the content hash in the same pass, or, after a
// fresh pickup of the file, with the slices' digests it took then from the
// same bytes as the content hash (kept beside its buffer under that hash,
// which the kept file names too, never sent). The upload does not wait for
// the probe above to start: a slice written before the probe answered is
// hashed once it has, and where the host turns out not to hash slices the
// whole file is verified after its last byte, as for a file of fewer
// slices.
//
// # Reading small files in batches
//
// On a stock host whose exec helper is up, a pickup of many small files
// (64 or more of at most 64 KiB each, with no partial) reads them as tar
// archives instead of one SFTP open, read and close each: one helper
// command per batch of at most 512 files, 4 MiB listed and 128 KiB of
// names, [BatchCommand] (POSIX cd, and tar -cf - --no-recursion with every
// name given as "./<dest>/<path>", quoted for the shell, below
// messor/outbox/: a directory put in a listed file's place is one member,
// passed over, not its content; GNU tar, bsdtar and busybox tar take the
// flag, and a tar that refuses it brings nothing, as no tar). The
// helper line frames the archive: a line "<marker> <seq> start", the
// archive (tar's stderr to /dev/null), two zero blocks from dd (an
// archiver that wrote nothing, no tar in PATH, reads as an empty archive),
// and "<marker> <seq> <exit status>". The carrier takes a member only where
// its name is one asked for (a leading "./" aside), it is a regular file
// (never a symlink, hard link or directory: tar does not follow the symlink
// a listed file may have become), its size and mtime (seconds) are those
// listed, it is the first of that name, and the archiver exited with status
// 0 (GNU tar pads the member of a file that shrank while read with zeros
// and exits 1, as it does for a file changed while read: no member of such
// an archive is taken, and a listed file missing fails it too), and the
// archive is followed by zeros only, the whole a number of 512-byte blocks
// (bytes another writer on the helper's output put inside a member would
// otherwise pass); every other member is passed over unread, and nothing is
// ever written under a member's name. A member taken is then handled as a
// file read over SFTP: lstat on the host shows the size and mtime listed (a
// file written to while tar read it shows a new mtime or size, and is not
// committed from the archive), its SHA-256 is computed on the carrier, it
// is committed, and it leaves the outbox by a claim. What the archive did
// not bring so (missing, refused, changed, the stream cut or stalled for 30
// s, more bytes than the listed sizes allow) is read by itself afterwards
// as before, once lstat shows it still a regular file as listed (a FIFO put
// in its place would block the host's sftp-server in open); after an
// archive that failed (the helper gone) or brought nothing with tar
// failing, the visit's remaining files are read by themselves. Agents and
// hosts without an exec helper are read file by file.
//
// # Delivering small files in batches
//
// On a stock OpenSSH host whose exec helper is up, a dropoff of many small
// files (64 or more; each of at most 256 KiB) writes each partial with an
// exclusive create (asking 0600; a partial already there, which may be a
// hard link to a file delivered, is removed and the create asked again),
// its writes, a setstat setting the source's mtime, an fsync@openssh.com
// and a close: no read back of its own. The
// partials written are proven in groups, one helper command per group (at
// most 512 partials, 16 MiB, 128 KiB of names), while the next group is
// written. The command is `sha256sum -c` reading, from printf, one line
// "<content hash>  <absolute path of the partial>" per partial (names
// quoted for the shell; a name holding a newline or a backslash, which
// sha256sum -c reads escaped, is never batched), one process for the
// group; only if it says OK for every one (its "<name>: OK" lines are
// counted: a line it cannot parse yields none), a chmod per mode gives each
// partial the source's bits plus its owner's read and write. It answers
// "ok", or "n" where a partial did not match (or no sha256sum -c works
// there). After an "n", a second command hashes each partial by itself
// with the probed tool ([HashTools]) from standard input, compares the
// digest with the content hash sent, chmods a matching one, and answers one
// line per partial in the order asked, "y" or "n" (names go out quoted and
// come back only as positions), then "end"; a host where that proved every
// partial of a group is asked so from then on. A reply not of that form, a
// helper gone or a command that failed leaves every partial of the group
// unproven. A partial not proven goes the per-file path from the start:
// written again, synced, read back and compared, and removed if it still
// does not match. Only a partial proven (and synced before) is given its
// exact bits and renamed into place (never replacing), its directory
// synced in the next batch of directory syncs, and then its receipt kept
// and its buffer entry released, as for every file. Agents, hosts without
// an exec helper and servers other than OpenSSH's sftp-server deliver file
// by file. What this cannot guard, as the per-file path cannot: the
// host's own tools are trusted (a sha256sum printing OK for anything
// proves anything), and a process on the host writing into a partial
// between its proof and its rename.
//
// # Stalls
//
// A carrier gives up on a session (and says so, naming the host and what
// it waited on; what was moved is kept) when, for the idle timeout (30 s
// by default):
//
//   - the host sent no byte at all on the connection. While the carrier
//     has nothing to ask, it sends keepalive@openssh.com requests, whose
//     replies count as life for the link; or
//   - an SFTP channel had requests outstanding and the host sent no byte
//     of a reply on any of the session's SFTP channels while the carrier
//     waited for one (over a slow link one channel's reply may wait behind
//     another's data, or behind the exec helper's output, a batch's
//     archive, which count too; bytes on a channel with no request
//     outstanding are no reply). Every SFTP request gets exactly one
//     reply, so the carrier counts requests and replies per channel (lanes
//     included, once started: a lane's start is bounded by the connect
//     timeout, and one not started is given up, not the session);
//     keepalive replies and other commands' output do not count as life
//     for SFTP work (sftp-server blocked in open(2) on a FIFO, a hung
//     mount, a server answering keepalives only). An fsync@openssh.com
//     request (a file's or a directory's) may take twice the idle timeout and a second more per 5 MiB written
//     since the last sync, and while it is outstanding the session's
//     other channels may wait as long (behind the same disk); a host
//     hashing a file for the carrier (agent request, or a hash command)
//     may be silent, until it answers, for 30 s and a second per 5 MiB
//     hashed. Exec commands have bounds of their own: a hash command its
//     hashing time, an archive 30 s without a byte.
//
// A host is never asked to answer faster than that; a request it never
// answers ends the visit, never hangs it. Time the carrier itself was not
// running (stopped by Ctrl-Z, starved of CPU, suspended) is not silence.
//
// # mDNS
//
// An agent advertises [ServiceType] in domain "local." with its name as the
// instance and TXT records [TxtVersion]=[Version] and
// [TxtFingerprint]=<SHA256 host key fingerprint>. A name heard over mDNS is
// never trusted alone: the carrier checks the host key against the one it
// pinned for that name.
//
// Which host a name means (one rule, discovery.Finder):
//  1. A name the user configured, listed in the pickup hosts file or named
//     by a Host line of ~/.ssh/config without wildcards (a block matched only
//     through "*" or "?", such as "Host *", does not claim a name; patterns
//     are split on blanks and compared regardless of case, as by OpenSSH;
//     relative Includes are read under the carrier's HOME), is dialled as
//     configured, always. An advert under that name is ignored
//     and logged (a warning when it points elsewhere).
//  2. Otherwise an agent pinned with `messor trust NAME` (its key in
//     ~/.config/messor/known_agents) and advertised by exactly one agent is
//     dialled at the advertised address; its key is checked against
//     known_agents only, and never accepted on first contact (accept-new is
//     for names the user configured).
//  3. Any other advert adds nothing: an unpinned agent is not dialled (a
//     refusal, exit status 1, when files wait for it), and a name advertised
//     by several agents is in conflict (exit status 1 when it is pinned or
//     files wait for it). A name claimed by more than 4 agents stays in
//     conflict for the rest of the browse, goodbyes or not.
//  4. A pinned agent not heard is out of range; any other destination name
//     resolves through ~/.ssh/config as ssh would, except that --accept-new
//     does not apply to it (only ssh_config's StrictHostKeyChecking does):
//     the name comes from an outbox, not from the user.
//
// A browse remembers at most 4,096 names, 4 agents per name and 16 addresses
// per agent, so a flood of adverts costs bounded memory and linear work.
package protocol
