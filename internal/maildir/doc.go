// Package maildir is agua's mail store: one Maildir per mailbox, written with
// durable, group-committed deliveries and per-mailbox quotas.
//
// # Format
//
// Mailbox local@domain lives in root/domain/local/ (a "/", "\", control
// character or leading dot in either part is written as \ooo, so no name
// can reach outside its folder) with the standard tmp/,
// new/ and cur/ folders, so mutt, Dovecot and other Maildir readers can use
// it directly (https://cr.yp.to/proto/maildir.html, and Maildir++ for the
// folders an IMAP server adds below). Files hold the message as received, CRLF
// line endings included, after a per-recipient header prefix (Return-Path,
// Delivered-To). A file is named
//
//	<unix seconds>.M<microseconds>P<pid>Q<counter>.<hostname>,S=<size>
//
// with "/" and ":" in the host name written as \057 and \072 as the Maildir
// specification asks; ",S=<size>" is the Dovecot convention that lets a
// reader learn a file's size without stat.
//
// # Durability
//
// Deliver returns nil only when every file of the delivery is complete on
// disk and in new/. Each delivery writes its files into tmp/ and queues
// for a group commit. One delivery at a time commits, on its own
// goroutine, everything that queued while the previous commit ran (up to
// Options.MaxBatch deliveries, without waiting for more; commit.go), in
// three steps:
//
//  1. syncfs(2) on each file system the batch wrote to (usually one; a
//     domain folder may be a mount point): the data of every file of the
//     batch, and its entry in tmp/, are on disk;
//  2. rename every file from tmp/ to new/ (RENAME_NOREPLACE);
//  3. acknowledge the batch.
//
// That is one flush per batch, whatever its size, and one per message for
// a single sender: what makes thousands of durable deliveries a second
// possible with twenty concurrent senders. With an fsync per file the
// journal commits many times per batch and creating files stalls behind it
// (see BenchmarkDeliverParallel). The price is that syncfs also writes
// other programs' dirty data on the same file system, and that before
// Linux 5.8 it did not report write errors. Options.FsyncEach selects the
// classic scheme instead: each delivering goroutine fsyncs its own files
// (concurrent fsyncs still share journal commits), and the commit renames
// them and fsyncs each distinct new/ folder once before acknowledging.
//
// Why syncfs mode is crash-safe with one flush: the renames of step 2 reach
// the disk with the next flush, not before the acknowledgement, so a crash
// may leave an acknowledged message in tmp/, complete. Its name says so: in
// syncfs mode a file is named with ",C=" and the CRC-32C of its content
// after ",S=" and its size, and Open, when no other Store has the folder
// open (a flock(2) of root/.agua-store.lock), moves every such tmp/ file
// whose size and checksum match into new/ (after a syncfs, since a kill -9
// leaves the page cache unflushed) and removes the others, which are torn:
// their delivery was never acknowledged, as acknowledgement follows a
// syncfs that began after the file was written. A file's data is on disk
// before its name can appear in new/ (step 1 precedes step 2, and recovery
// flushes first), and rename is atomic, so a reader never sees a partial
// message in new/, even after a crash. A complete file whose
// acknowledgement never reached the sender is delivered by recovery too;
// the sender retries, and the recipient may get that message twice (RFC
// 5321 6.1 prefers that to losing it). Other leftovers in tmp/ (FsyncEach
// mode, other programs) are removed at Open when older than 36 hours, as
// the Maildir specification advises. On an error before the commit the
// tmp/ files are removed; if a rename fails, the delivery's files already
// in new/ are removed again (best effort, logged), so a failed delivery
// leaves nothing behind for any recipient.
//
// # Quota
//
// Usage per mailbox is kept in memory, computed by listing new/ and cur/
// (reading ",S=" from names and calling stat only for names without it):
// for every mailbox in the background after Open, and again when older than
// a minute, so deletions by other programs are noticed. A listing runs
// without the mailbox's lock and a delivery never waits for it, except the
// first delivery to a mailbox whose usage was never listed; the files
// committed while it runs are reconciled with what it saw. Deliver reserves the bytes of every recipient before writing
// anything, so two concurrent deliveries cannot both pass a check only one of
// them fits; if any recipient is over quota nothing is written for anyone.
//
// # Reading
//
// Store.Folder opens a folder of a mailbox (INBOX, or a Maildir++ folder
// ".Name" for IMAP) for POP3 and IMAP sessions: List returns its messages
// with stable UIDs and a UIDVALIDITY, Open reads one, MarkSeen moves
// messages from new/ to cur/ as the Maildir specification asks of a reader,
// SetFlags edits the ":2,<flags>" info, Delete unlinks (and fsyncs the
// folder), and Lock is the POP3 maildrop lock. UIDs are kept in the
// folder's agua-uidlist file (Dovecot's dovecot-uidlist is the model; see
// index.go), replaced atomically and fsynced before a new UID is handed
// out, so they survive restarts and are shared by every protocol. A listing
// reads new/ or cur/ again only when its modification time changed (or is
// too recent to trust), and takes sizes from ",S=" in names: a warm listing
// of 10,000 messages costs two stat calls (see BenchmarkList10k*).
package maildir
