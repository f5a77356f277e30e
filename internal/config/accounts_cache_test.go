package config

import (
	"errors"
	"testing"
	"time"
)

func TestAccountsCacheKeys(t *testing.T) {
	src := `memory_limit = "256MiB"

[accounts]
snapshot_max_entries = 5000
hash_memory = "40MiB"
auth_cache_ttl = "90s"
auth_cache_size = 7
`
	c, err := Parse("mem.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := AccountsCache{SnapshotMaxEntries: 5000, HashMemory: 40 << 20, AuthCacheTTL: 90 * time.Second, AuthCacheSize: 7}
	if c.Accounts.AccountsCache != want || c.MemoryLimit != 256<<20 {
		t.Fatalf("parsed %+v, memory_limit %d", c.Accounts.AccountsCache, c.MemoryLimit)
	}

	src = `[accounts]
hash_memory = 0
auth_cache_size = 0
`
	_, err = Parse("bad.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 ||
		ce.Problems[0].Key != "accounts.hash_memory" || ce.Problems[0].Line != 2 ||
		ce.Problems[1].Key != "accounts.auth_cache_size" || ce.Problems[1].Line != 3 {
		t.Fatalf("problems: %v", err)
	}
	// With the cache off, its size does not matter.
	if _, err := Parse("off.toml", []byte("[accounts]\nauth_cache_ttl = \"0s\"\nauth_cache_size = 0\n")); err != nil {
		t.Fatal(err)
	}
}
