// Package maildir is agua's mail store: one Maildir per mailbox, written with
// durable, group-committed deliveries and per-mailbox quotas.
//
// # Format
//
// Mailbox local@domain lives in root/domain/local/ with the standard tmp/,
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
// Deliver returns nil only when the data of every file and its directory
// entry in new/ are on disk. Each delivery writes its files into tmp/,
// fsyncs them (in the delivering goroutine, so that the kernel merges the
// concurrent flushes into a few journal commits) and then hands them to one
// committer goroutine. The committer takes everything that queued while it
// was busy (up to Options.MaxBatch deliveries, without waiting for more),
// renames all of the batch's files from tmp/ to new/, and fsyncs each distinct
// new/ folder once. Twenty concurrent deliveries to one mailbox thus cost one
// directory fsync, not twenty.
//
// Why this is crash-safe: a file's data is durable before its name appears
// in new/ (fsync precedes rename), and rename is atomic, so a reader never
// sees a partial message in new/ even after a crash. A crash before the
// directory fsync can lose the rename, leaving the complete file in tmp/;
// since Deliver had not returned, the sender had no acknowledgement and will
// retry. Such leftovers are removed at Open when older than 36 hours, as the
// Maildir specification advises. On any error before the commit, the tmp/
// files are removed; if a rename or the directory fsync fails, the files
// already renamed for that delivery are removed from new/ again (best effort,
// logged), so a failed delivery leaves nothing behind for any recipient.
//
// A single syncfs(2) per batch was the other candidate; it is not used
// because it flushes every dirty page of the whole file system, including
// other programs' writes, which makes delivery latency depend on neighbours.
//
// # Quota
//
// Usage per mailbox is kept in memory, computed lazily by listing new/ and
// cur/ (reading ",S=" from names and calling stat only for names without it)
// and recomputed when older than a minute, so deletions by other programs are
// noticed. Deliver reserves the bytes of every recipient before writing
// anything, so two concurrent deliveries cannot both pass a check only one of
// them fits; if any recipient is over quota nothing is written for anyone.
package maildir
