package config

import "time"

// AccountsCache configures what the server keeps in memory about the
// accounts, and how much memory password hashing may take. Its keys sit in
// [accounts].
type AccountsCache struct {
	SnapshotMaxEntries int           `toml:"snapshot_max_entries" doc:"Keep the domains, users and aliases in memory (about 160 bytes per user or alias) while there are at most this many users plus aliases: RCPT lookups, unknown recipients included, then read no table. Any change to the database rebuilds it in full (a few microseconds per entry, lookups wait meanwhile). Larger directories read SQL for every lookup. 0: always SQL."`
	HashMemory         ByteSize      `toml:"hash_memory" doc:"Memory that password hashing may hold at once: one argon2id verification holds 19MiB, so 64MiB lets three run together (never more than one per core, always at least one); a login flood queues for it, and a login whose client closes its connection while it waits leaves the queue unverified. As soon as no hash runs or waits, this memory goes back to the system."`
	AuthCacheTTL       time.Duration `toml:"auth_cache_ttl" doc:"How long a successful login is remembered, so that a repeat with the same password skips the password hash (as Dovecot's auth_cache). A changed password or a removed user ends it at once, also when changed by the CLI; failures are never remembered. 0 disables."`
	AuthCacheSize      int           `toml:"auth_cache_size" doc:"Most logins remembered (about 150 bytes each)."`
}

var defaultAccountsCache = AccountsCache{
	SnapshotMaxEntries: 250_000,
	HashMemory:         64 << 20,
	AuthCacheTTL:       5 * time.Minute,
	AuthCacheSize:      100_000,
}

func (a AccountsCache) problems() []Problem {
	var ps []Problem
	bad := func(key, msg string) { ps = append(ps, Problem{Key: "accounts." + key, Msg: msg}) }
	if a.SnapshotMaxEntries < 0 {
		bad("snapshot_max_entries", "must be >= 0 (0: always SQL)")
	}
	if a.HashMemory <= 0 {
		bad("hash_memory", "must be > 0 (e.g. \"64MiB\")")
	}
	if a.AuthCacheTTL < 0 {
		bad("auth_cache_ttl", "must be >= 0 (0 disables the cache)")
	}
	if a.AuthCacheTTL > 0 && a.AuthCacheSize <= 0 {
		bad("auth_cache_size", "must be > 0 while auth_cache_ttl is set")
	}
	return ps
}
