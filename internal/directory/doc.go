// Package directory keeps agua's accounts: the local domains, the users with
// their password hashes and quotas, and the aliases (including a per-domain
// catch-all) that map addresses to mailboxes.
//
// The data lives in one SQLite database (WAL mode, busy timeout) that the
// running server and the `agua` CLI open at the same time. A change made by
// the CLI applies to the running server at once: with
// Options.SnapshotMaxEntries the server answers lookups (Resolve, CanSendAs,
// IsLocalDomain, the user part of Authenticate) from an in-memory snapshot
// that every lookup first checks against the database's change counter
// (snapshot.go, walindex.go), and otherwise every call reads the database.
// Successful logins may be remembered for a short time (passwd.Cache), keyed
// by an HMAC of the password, never the password, and forgotten when the
// user's stored hash changes.
//
// *Directory implements the accounts contract (internal/accounts: Lookup for
// the mail services, Admin for the CLI) and passes its conformance suite
// (internal/accounts/accountstest). A PostgreSQL backend would implement the
// same contract, but it cannot reuse this SQL as it is. What is SQLite's:
//   - `?` placeholders; PostgreSQL drivers want $1, $2, ...
//   - quota and created are INTEGER, which SQLite stores as 64 bits and
//     PostgreSQL as 32 (a quota over 2 GiB would be refused, created ends
//     in 2038): PostgreSQL needs BIGINT.
//   - correctness under concurrent writers: every write checks, then writes,
//     in a transaction that takes SQLite's one write lock at BEGIN
//     (_txlock=immediate), so the checks that give ErrExists, ErrNotEmpty
//     and ErrNotFound cannot race. Under PostgreSQL's READ COMMITTED two
//     writers can pass the same check; the primary and foreign keys would
//     then fail with constraint errors that must be mapped to the sentinels,
//     and the rule that an address is a user or an alias, never both, has no
//     constraint at all: those writes need SERIALIZABLE (with retries) or a
//     lock.
//   - the connection string (file: URI, _busy_timeout, _journal_mode=WAL,
//     _foreign_keys=1) and the busy detection by SQLite's error text, which
//     the first-start migration retries on.
//   - ORDER BY compares bytes (SQLite's BINARY collation); PostgreSQL sorts
//     by the database's collation unless told COLLATE "C".
//
// The schema itself (CREATE TABLE, primary and foreign keys, indexes, the
// schema_version table) and the queries are otherwise plain SQL.
//
// Addresses are normalised to lower case (local part and domain) and checked:
// one @, a dot-atom local part that may contain UTF-8 (RFC 5321 4.1.2, RFC 6531
// 3.3), and a domain that is a valid ASCII host name (RFC 1123 2.1; IDNs in
// their xn-- A-label form, RFC 5890).
//
// Passwords are stored as argon2id hashes in the PHC string format (RFC 9106,
// OWASP minimum parameters m=19456 KiB, t=2, p=1). bcrypt hashes ($2a$, $2b$,
// $2y$) are verified too so that imported accounts keep working. Hash work is
// bounded by a semaphore sized from a memory budget (Options.HashMemory), and
// an unknown user costs the same work as a wrong password, so neither a login
// flood nor timing reveals much.
package directory
