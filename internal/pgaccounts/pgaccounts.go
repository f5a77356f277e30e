// Package pgaccounts is the accounts directory on PostgreSQL (issue 17): the
// local domains, the users with their argon2id password hashes and quotas,
// and the aliases (catch-alls and forwards included), shared by every agua
// node that points at the same database. It implements the accounts contract
// (internal/accounts: Lookup for the mail services, Admin for the CLI) and
// passes its conformance suite, with the same rules as the SQLite directory:
// the address syntax and alias resolution of internal/accounts, the
// password work of internal/passwd.
//
// Writes take one transaction-scoped advisory lock, so that the checks that
// give ErrExists, ErrNotEmpty and ErrNotFound cannot race between nodes (as
// SQLite's single write lock does for the file directory): two nodes adding
// the same user get one success and one ErrExists. The schema (schema.go)
// is applied by agua db migrate.
//
// Every node may keep the whole directory in memory (Options.
// SnapshotMaxEntries) and remember recent logins (passwd.Cache). Both are
// kept true by LISTEN/NOTIFY: a trigger announces every change at COMMIT,
// and each node drops its snapshot when told (watch.go). While the
// listening connection is down, a node cannot know what changed, so it
// drops both and reads SQL for every lookup until it listens again: it
// never serves a password that was changed elsewhere. When PostgreSQL is
// unreachable, lookups fail with pg.ErrUnavailable, which the mail services
// answer with temporary errors, never "wrong password" or "no such user".
package pgaccounts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/passwd"
	"github.com/agua-mail/agua/internal/pg"
)

// Options configure a Directory; they mean what directory.Options mean.
type Options struct {
	// DefaultQuota in bytes applies to users whose quota is 0. It must be > 0.
	DefaultQuota int64
	// Logger receives operator-facing events; nil discards them.
	Logger *slog.Logger
	// SnapshotMaxEntries turns on the in-memory snapshot for directories
	// of at most this many users plus aliases; larger ones, and 0, read
	// SQL for every lookup.
	SnapshotMaxEntries int
	// HashMemory bounds the memory of password hashing at once (see
	// passwd.NewHasher); 0 means passwd.DefaultHashMemory.
	HashMemory int64
	// AuthCacheTTL is how long a successful login is remembered; 0
	// disables the cache. AuthCacheSize bounds it (> 0 when it is on).
	AuthCacheTTL  time.Duration
	AuthCacheSize int
	// ClosePool makes Close close the pool too (for a caller that opened
	// it only for the directory, such as a CLI verb).
	ClosePool bool
}

// User and Alias are the accounts contract's types.
type (
	User  = accounts.User
	Alias = accounts.Alias
)

// Directory is the accounts directory in one PostgreSQL database. It is
// safe for concurrent use; any number of nodes may use the same database.
type Directory struct {
	pool         *pgxpool.Pool
	closePool    bool
	defaultQuota int64
	log          *slog.Logger
	hasher       *passwd.Hasher
	cache        *passwd.Cache // nil: every login is verified
	w            *watcher      // nil: no snapshot and no cache, nothing to keep true
	stop         context.CancelFunc
	done         chan struct{} // closed when the watcher has stopped
}

var _ accounts.Directory = (*Directory)(nil)

// opTimeout bounds every statement a call makes when its context has no
// deadline of its own.
const opTimeout = 30 * time.Second

// writeLock is the advisory lock every write transaction holds ("acct").
const writeLock = 0x61636374

// Open returns the directory in the database of pool, whose schema must be
// migrated (Migrations). It does not own the pool unless opts.ClosePool.
func Open(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Directory, error) {
	return open(ctx, pool, opts, func(ctx context.Context) (*pgx.Conn, error) {
		return pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	})
}

// open is Open with the function that opens the listening connection.
func open(ctx context.Context, pool *pgxpool.Pool, opts Options, dial func(context.Context) (*pgx.Conn, error)) (*Directory, error) {
	if opts.DefaultQuota <= 0 {
		return nil, newErr(accounts.ErrInvalid, "default quota must be greater than zero")
	}
	if opts.AuthCacheTTL > 0 && opts.AuthCacheSize <= 0 {
		return nil, newErr(accounts.ErrInvalid, "the login cache needs a size greater than zero")
	}
	if opts.HashMemory == 0 {
		opts.HashMemory = passwd.DefaultHashMemory
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Directory{
		pool: pool, closePool: opts.ClosePool, defaultQuota: opts.DefaultQuota, log: log,
		hasher: passwd.NewHasher(opts.HashMemory, runtime.GOMAXPROCS(0)),
		done:   make(chan struct{}),
	}
	if opts.AuthCacheTTL > 0 {
		d.cache = passwd.NewCache(opts.AuthCacheTTL, opts.AuthCacheSize)
	}
	if opts.SnapshotMaxEntries > 0 || d.cache != nil {
		d.w = &watcher{d: d, maxEntries: opts.SnapshotMaxEntries, dial: dial}
		wctx, stop := context.WithCancel(context.Background())
		d.stop = stop
		go func() {
			defer close(d.done)
			d.w.run(wctx)
		}()
		// Serve from memory only once listening; until then (and whenever
		// the listener is down) lookups read SQL.
		d.w.waitLive(ctx, 5*time.Second)
	} else {
		close(d.done)
	}
	return d, nil
}

// Close stops the change listener (and closes the pool if asked to).
func (d *Directory) Close() error {
	if d.stop != nil {
		d.stop()
	}
	<-d.done
	if d.closePool {
		d.pool.Close()
	}
	return nil
}

func newErr(kind error, msg string) error { return accounts.NewError(kind, msg) }

func errDomainNotLocal(domain string) error {
	return newErr(accounts.ErrNotFound, "domain "+domain+" is not a local domain; add it with `agua domain add`")
}

// withDeadline gives ctx a deadline when it has none.
func withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, opTimeout)
}

// dbErr wraps a database failure with what was being done; a database that
// is down comes out wrapped in pg.ErrUnavailable.
func dbErr(what string, err error) error {
	return fmt.Errorf("%s: %w", what, pg.Classify(err))
}

// write runs f in a transaction under the directory's write lock and
// commits it if f returns nil. The triggers announce the change at COMMIT;
// this process's own snapshot is dropped at once.
func (d *Directory) write(ctx context.Context, f func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return dbErr("beginning transaction", err)
	}
	defer tx.Rollback(context.Background()) // a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(writeLock)); err != nil {
		return dbErr("taking the accounts write lock", err)
	}
	if err := f(ctx, tx); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation: a write outside agua raced us
			return newErr(accounts.ErrExists, "already exists: "+pe.Detail)
		}
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return dbErr("committing", err)
	}
	if d.w != nil {
		d.w.changed()
	}
	return nil
}

// querier is what the pool and a transaction have in common.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// exists reports whether query returns a row.
func exists(ctx context.Context, q querier, query string, args ...any) (bool, error) {
	var one int
	err := q.QueryRow(ctx, query, args...).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, dbErr("querying the directory", err)
	}
	return true, nil
}

func isLocalDomain(ctx context.Context, q querier, domain string) (bool, error) {
	return exists(ctx, q, `SELECT 1 FROM accounts_domains WHERE name = $1`, domain)
}

// requireDomain returns ErrNotFound unless domain is local.
func requireDomain(ctx context.Context, q querier, domain string) error {
	ok, err := isLocalDomain(ctx, q, domain)
	if err != nil {
		return err
	}
	if !ok {
		return errDomainNotLocal(domain)
	}
	return nil
}

// AddDomain adds a local domain. ErrExists if it is already local.
func (d *Directory) AddDomain(ctx context.Context, name string) error {
	domain, err := accounts.NormaliseDomain(name)
	if err != nil {
		return err
	}
	return d.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		ok, err := isLocalDomain(ctx, tx, domain)
		if err != nil {
			return err
		}
		if ok {
			return newErr(accounts.ErrExists, "domain "+domain+" already exists")
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts_domains (name) VALUES ($1)`, domain); err != nil {
			return dbErr("adding domain "+domain, err)
		}
		return nil
	})
}

// RemoveDomain removes a local domain. ErrNotFound if it is not local,
// ErrNotEmpty while it still has users or aliases.
func (d *Directory) RemoveDomain(ctx context.Context, name string) error {
	domain, err := accounts.NormaliseDomain(name)
	if err != nil {
		return err
	}
	return d.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := requireDomain(ctx, tx, domain); err != nil {
			return err
		}
		var users, aliases int
		if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts_users WHERE domain = $1), (SELECT count(*) FROM accounts_aliases WHERE domain = $1)`,
			domain).Scan(&users, &aliases); err != nil {
			return dbErr("counting users and aliases of "+domain, err)
		}
		if users > 0 || aliases > 0 {
			return newErr(accounts.ErrNotEmpty, fmt.Sprintf("domain %s still has %d users and %d aliases; remove them first", domain, users, aliases))
		}
		if _, err := tx.Exec(ctx, `DELETE FROM accounts_domains WHERE name = $1`, domain); err != nil {
			return dbErr("removing domain "+domain, err)
		}
		return nil
	})
}

// ListDomains returns the local domains in alphabetical order.
func (d *Directory) ListDomains(ctx context.Context) ([]string, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	src, err := d.source(ctx)
	if err != nil {
		return nil, err
	}
	if snap, ok := src.(*snapshot); ok {
		return slices.Clone(snap.list), nil
	}
	rows, err := d.pool.Query(ctx, `SELECT name FROM accounts_domains ORDER BY name`)
	if err != nil {
		return nil, dbErr("listing domains", err)
	}
	domains, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbErr("listing domains", err)
	}
	return domains, nil
}

// IsLocalDomain reports whether name is one of our domains. A syntactically
// invalid name is simply not local.
func (d *Directory) IsLocalDomain(ctx context.Context, name string) (bool, error) {
	domain, err := accounts.NormaliseDomain(name)
	if err != nil {
		return false, nil
	}
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	src, err := d.source(ctx)
	if err != nil {
		return false, err
	}
	return src.IsLocalDomain(ctx, domain)
}
