package pgaccounts

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/accounts/accountstest"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// migrated opens a pool to url and applies the accounts schema.
func migrated(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pg.Open(ctx, url, pg.Options{MaxConns: 8})
	must(t, err)
	t.Cleanup(pool.Close)
	if _, err := pg.Migrate(ctx, pool, Migrations); err != nil {
		t.Fatal(err)
	}
	return pool
}

func openDir(t *testing.T, pool *pgxpool.Pool, opts Options) *Directory {
	t.Helper()
	if opts.DefaultQuota == 0 {
		opts.DefaultQuota = accountstest.DefaultQuota
	}
	d, err := Open(context.Background(), pool, opts)
	must(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// cached is how the server runs it: snapshot and login cache on.
var cached = Options{SnapshotMaxEntries: 1000, AuthCacheTTL: 5 * time.Minute, AuthCacheSize: 100}

// TestConformance runs the accounts contract's suite against PostgreSQL:
// every lookup in SQL, and with the snapshot and the login cache.
func TestConformance(t *testing.T) {
	srv := pgtest.Shared(t)
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"SQL", Options{}},
		{"Snapshot", cached},
	} {
		t.Run(c.name, func(t *testing.T) {
			accountstest.Run(t, func(t *testing.T, defaultQuota int64) accounts.Directory {
				opts := c.opts
				opts.DefaultQuota = defaultQuota
				d, err := Open(context.Background(), migrated(t, srv.NewDatabase(t)), opts)
				must(t, err)
				return d
			})
		})
	}
}

// eventually waits, bounded, for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not so after 20 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two nodes on one database: a change made on A applies on B, whose
// snapshot and login cache are flushed by the notification.
func TestTwoNodes(t *testing.T) {
	ctx := context.Background()
	pool := migrated(t, pgtest.Shared(t).NewDatabase(t))
	// Each node has its own pool, as two processes would.
	poolB, err := pg.Open(ctx, pool.Config().ConnString(), pg.Options{MaxConns: 4})
	must(t, err)
	t.Cleanup(poolB.Close)
	a, b := openDir(t, pool, cached), openDir(t, poolB, cached)
	if !b.Live() {
		t.Fatal("node B is not listening after Open")
	}
	must(t, a.AddDomain(ctx, "example.org"))
	must(t, a.AddUser(ctx, "alice@example.org", "old secret", 0))

	authOK := func(d *Directory, pw string) bool {
		_, err := d.Authenticate(ctx, "alice@example.org", pw)
		if err != nil && !errors.Is(err, accounts.ErrAuthFailed) {
			t.Fatal(err)
		}
		return err == nil
	}
	eventually(t, "B sees the user added on A", func() bool { return authOK(b, "old secret") })
	// B now has alice in its snapshot and its login cache.
	must(t, a.SetPassword(ctx, "alice@example.org", "new secret"))
	eventually(t, "B refuses the old password", func() bool { return !authOK(b, "old secret") })
	if !authOK(b, "new secret") {
		t.Fatal("B refuses the new password")
	}
	must(t, a.AddAlias(ctx, "sales@example.org", "alice@example.org"))
	eventually(t, "B resolves the alias added on A", func() bool {
		users, err := b.Resolve(ctx, "sales@example.org")
		return err == nil && len(users) == 1
	})
	must(t, a.RemoveAlias(ctx, "sales@example.org", "alice@example.org"))
	must(t, a.RemoveUser(ctx, "alice@example.org"))
	eventually(t, "B forgets the user removed on A", func() bool {
		_, err := b.Resolve(ctx, "alice@example.org")
		return errors.Is(err, accounts.ErrNoSuchUser)
	})
	if authOK(b, "new secret") {
		t.Fatal("B lets a removed user log in")
	}
	must(t, a.RemoveDomain(ctx, "example.org"))
	eventually(t, "B forgets the domain removed on A", func() bool {
		_, err := b.Resolve(ctx, "alice@example.org")
		return errors.Is(err, accounts.ErrNotLocal)
	})
}

// A change made outside agua (psql) is announced by the trigger too.
func TestChangeBySQL(t *testing.T) {
	ctx := context.Background()
	pool := migrated(t, pgtest.Shared(t).NewDatabase(t))
	d := openDir(t, pool, cached)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "alice@example.org", "secret", 0))
	if _, err := d.Authenticate(ctx, "alice@example.org", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM accounts_users`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the user deleted with SQL is gone", func() bool {
		_, err := d.Authenticate(ctx, "alice@example.org", "secret")
		return errors.Is(err, accounts.ErrAuthFailed)
	})
}

// Two nodes adding the same domain, user and alias at once: one success
// each, the rest ErrExists.
func TestTwoNodesConcurrentAdds(t *testing.T) {
	pool := migrated(t, pgtest.Shared(t).NewDatabase(t))
	poolB, err := pg.Open(context.Background(), pool.Config().ConnString(), pg.Options{MaxConns: 4})
	must(t, err)
	t.Cleanup(poolB.Close)
	accountstest.ConcurrentAdds(t, openDir(t, pool, Options{}), openDir(t, poolB, cached))
}

// A node whose listening connection is lost cannot hear of changes: until
// it listens again it reads SQL, so a password changed on another node
// meanwhile is refused there at once, never served from its snapshot or
// login cache; when it is back, it still is.
func TestListenerLost(t *testing.T) {
	ctx := context.Background()
	pool := migrated(t, pgtest.Shared(t).NewDatabase(t))
	poolB, err := pg.Open(ctx, pool.Config().ConnString(), pg.Options{MaxConns: 4})
	must(t, err)
	t.Cleanup(poolB.Close)
	var hold atomic.Bool // while set, B cannot listen again
	opts := cached
	opts.DefaultQuota = accountstest.DefaultQuota
	b, err := open(ctx, poolB, opts, func(ctx context.Context) (*pgx.Conn, error) {
		for hold.Load() {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			time.Sleep(10 * time.Millisecond)
		}
		return pgx.ConnectConfig(ctx, poolB.Config().ConnConfig.Copy())
	})
	must(t, err)
	t.Cleanup(func() { b.Close() })
	a := openDir(t, pool, Options{})
	must(t, a.AddDomain(ctx, "example.org"))
	must(t, a.AddUser(ctx, "alice@example.org", "old secret", 0))
	eventually(t, "B logs alice in (snapshot and cache warm)", func() bool {
		_, err := b.Authenticate(ctx, "alice@example.org", "old secret")
		return err == nil
	})

	hold.Store(true)
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B notices its listener is gone", func() bool { return !b.Live() })
	must(t, a.SetPassword(ctx, "alice@example.org", "new secret")) // B hears nothing of it
	if _, err := b.Authenticate(ctx, "alice@example.org", "old secret"); !errors.Is(err, accounts.ErrAuthFailed) {
		t.Fatalf("B without its listener, old password: %v, want ErrAuthFailed", err)
	}
	if _, err := b.Authenticate(ctx, "alice@example.org", "new secret"); err != nil {
		t.Fatalf("B without its listener, new password: %v", err)
	}

	hold.Store(false)
	eventually(t, "B listens again", b.Live)
	if _, err := b.Authenticate(ctx, "alice@example.org", "old secret"); !errors.Is(err, accounts.ErrAuthFailed) {
		t.Fatalf("B listening again, old password: %v", err)
	}
}
