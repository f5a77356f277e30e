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
// (internal/accounts/accountstest), as internal/pgaccounts does on PostgreSQL.
// What is not SQL is shared with it: the address syntax and alias resolution
// (internal/accounts) and the password work (internal/passwd).
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
