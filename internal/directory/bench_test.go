package directory

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/passwd"
)

// Benchmarks of the lookups every RCPT TO makes (router.resolve ->
// Resolve) and of a repeated login. Run them with
//
//	go test -run '^$' -bench . -benchmem ./internal/directory/
//
// "SQL" is the directory without a snapshot (as before it had one).

func benchDir(b *testing.B, opts Options) *Directory {
	b.Helper()
	ctx := context.Background()
	opts.DefaultQuota = testQuota
	d, err := Open(filepath.Join(b.TempDir(), "agua.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	for _, err := range []error{
		d.AddDomain(ctx, "example.org"),
		d.AddUser(ctx, "alice@example.org", "alice secret", 0),
		d.AddUser(ctx, "bob@example.org", "bob secret", 0),
		d.AddAlias(ctx, "sales@example.org", "alice@example.org"),
		d.AddAlias(ctx, "sales@example.org", "bob@example.org"),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	return d
}

var lookupModes = []struct {
	name string
	opts Options
}{
	{"Snapshot", Options{SnapshotMaxEntries: 1000}},
	{"SQL", Options{}},
}

func benchResolve(b *testing.B, addr string, want error) {
	for _, m := range lookupModes {
		b.Run(m.name, func(b *testing.B) {
			d := benchDir(b, m.opts)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Resolve(ctx, addr); err != want && (want == nil || !isKind(err, want)) {
					b.Fatal(err)
				}
			}
		})
	}
}

func isKind(err, kind error) bool {
	de, ok := err.(*accounts.Error)
	return ok && de.Kind == kind
}

func BenchmarkResolveUser(b *testing.B)    { benchResolve(b, "alice@example.org", nil) }
func BenchmarkResolveUnknown(b *testing.B) { benchResolve(b, "guess123@example.org", ErrNoSuchUser) }
func BenchmarkResolveAlias(b *testing.B)   { benchResolve(b, "sales@example.org", nil) }

// A login repeated within auth_cache_ttl: no argon2id.
func BenchmarkAuthenticateCached(b *testing.B) {
	for _, m := range lookupModes {
		b.Run(m.name, func(b *testing.B) {
			opts := m.opts
			opts.AuthCacheTTL, opts.AuthCacheSize = time.Hour, 100
			d := benchDir(b, opts)
			ctx := context.Background()
			if _, err := d.Authenticate(ctx, "alice@example.org", "alice secret"); err != nil {
				b.Fatal(err)
			}
			hashes := countHashes(d)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Authenticate(ctx, "alice@example.org", "alice secret"); err != nil {
					b.Fatal(err)
				}
			}
			if hashes.Load() != 0 {
				b.Fatalf("%d hashes computed for cached logins", hashes.Load())
			}
		})
	}
}

// BenchmarkSnapshotMemory reports the heap a snapshot takes per user
// (addresses of 20-odd bytes). It builds one snapshot per iteration.
func BenchmarkSnapshotMemory(b *testing.B) {
	const users = 20000
	ctx := context.Background()
	d, err := Open(filepath.Join(b.TempDir(), "agua.db"), Options{DefaultQuota: testQuota, SnapshotMaxEntries: 2 * users})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(d.AddDomain(ctx, "example.org"))
	hash, err := passwd.Hash("pw")
	must(err)
	tx, err := d.db.Begin()
	must(err)
	for i := range users {
		_, err := tx.Exec(`INSERT INTO users (address, domain, password, quota, created) VALUES (?, 'example.org', ?, 0, 0)`,
			fmt.Sprintf("user%06d@example.org", i), hash)
		must(err)
	}
	must(tx.Commit())
	var perUser float64
	for b.Loop() {
		d.snaps.mu.Lock()
		d.snaps.closeConn() // forget the snapshot: the next lookup builds one
		d.snaps.mu.Unlock()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := d.Resolve(ctx, "user000001@example.org"); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perUser = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / users
	}
	b.ReportMetric(perUser, "bytes/user")
}
