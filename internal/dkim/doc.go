// Package dkim signs outgoing mail with DKIM (RFC 6376) using the keys kept
// in the data folder, on github.com/emersion/go-msgauth's signer.
//
// Keys: one PKCS#8 PEM file per selector, DATA/dkim/<domain>/<selector>.key,
// mode 0600 in a 0700 folder, created atomically and never overwritten by
// Keygen. ed25519 (RFC 8463) and RSA-2048 (RFC 8301) keys are supported; the
// DNS record (Key.Record, Key.ZoneRecord) is derived from the private key.
// Per domain, the newest key of each algorithm signs; with both, every
// message gets two signatures (RFC 8463 3: ed25519 and RSA side by side, so
// verifiers that know only RSA still pass).
//
// Signing: Signer.Sign returns the DKIM-Signature field(s) to prepend, with
// relaxed/relaxed canonicalization (RFC 6376 3.4), the fields in
// DefaultHeaders and From (plus DefaultOversign) oversigned (RFC 6376 8.15).
// The signing domain is the From header's domain, or the envelope sender's
// when From is not ours (see Sign). A domain without a key is sent unsigned,
// never refused.
//
// Reloading: Signer.Reload reads the files again; Signer.Watch does so when
// they change (fsnotify), so `agua dkim keygen` applies to a running server.
//
// Issue 14's verification can load the same keys with LoadKeys (for tests
// that sign with agua's keys) and use Key.Record as the TXT answer.
package dkim
