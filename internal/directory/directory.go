package directory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/passwd"
)

// Options configure a Directory.
type Options struct {
	// DefaultQuota in bytes applies to users whose quota is 0. It must be > 0.
	DefaultQuota int64
	// Logger receives operator-facing events; nil discards them.
	Logger *slog.Logger
	// SnapshotMaxEntries turns on the in-memory snapshot (snapshot.go)
	// for directories of at most this many users plus aliases; larger
	// ones, and 0, read SQL for every lookup.
	SnapshotMaxEntries int
	// HashMemory in bytes bounds the memory of password hashing at once
	// (one slot per 19 MiB, at least one, at most one per core); 0 means
	// passwd.DefaultHashMemory.
	HashMemory int64
	// AuthCacheTTL is how long a successful login is remembered
	// (passwd.Cache); 0 disables the cache. AuthCacheSize bounds it and
	// must be > 0 when the cache is on.
	AuthCacheTTL  time.Duration
	AuthCacheSize int
}

// User and Alias are the accounts contract's types (internal/accounts).
type (
	User  = accounts.User
	Alias = accounts.Alias
)

// Directory is the account database. It is safe for concurrent use, and
// several processes may open the same file. It implements accounts.Directory.
type Directory struct {
	db           *sql.DB
	q            *stmtCache // read queries, prepared once
	defaultQuota int64
	log          *slog.Logger
	hasher       *passwd.Hasher
	snaps        *snapshots    // nil: every lookup reads SQL
	cache        *passwd.Cache // nil: every login is verified
}

var _ accounts.Directory = (*Directory)(nil)

// busyTimeout is how long a statement waits for another process (the CLI or
// the server) holding the write lock.
const busyTimeout = 10 * time.Second

// cacheKiB bounds each SQLite connection's page cache (PRAGMA cache_size,
// negative: in KiB). SQLite's default is 2,000 KiB a connection, and the
// pure-Go build (modernc.org/libc) gives every cached 4 KiB page an 8 KiB
// slot (its allocator rounds to powers of two) and keeps freed memory for
// reuse: after a burst of 1,000 POP3 logins against 10,000 users the
// snapshot's dedicated connection and the pool's held 6.3 MB of cached pages
// (2.1 MB with this bound), a third of agua's anonymous memory (issue 15).
// The pages are in the kernel's page cache anyway, the snapshot answers the
// hot lookups from memory, and the lookups that do reach SQL (a login's
// stored hash, a directory too big for a snapshot) read a few pages by
// primary key, whose upper levels this much keeps.
const cacheKiB = 256

// Open opens or creates the database at path and brings its schema up to
// date.
func Open(path string, opts Options) (*Directory, error) {
	if opts.DefaultQuota <= 0 {
		return nil, newErr(ErrInvalid, "default quota must be greater than zero")
	}
	if path == "" {
		return nil, newErr(ErrInvalid, "database path is empty")
	}
	if opts.AuthCacheTTL > 0 && opts.AuthCacheSize <= 0 {
		return nil, newErr(ErrInvalid, "the login cache needs a size greater than zero")
	}
	if opts.HashMemory == 0 {
		opts.HashMemory = passwd.DefaultHashMemory
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// WAL lets the server read while the CLI writes; immediate transactions
	// take the write lock at BEGIN so two writers queue on busy_timeout
	// instead of failing when a read lock cannot be upgraded.
	// The path goes into a URI (file:...), where %, ? and # are special.
	uriPath := uriEscape(path)
	dsn := fmt.Sprintf("file:%s?_busy_timeout=%d&_journal_mode=WAL&_txlock=immediate&_foreign_keys=1&_pragma=cache_size(-%d)",
		uriPath, busyTimeout.Milliseconds(), cacheKiB)
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	d := &Directory{
		db:           db,
		q:            newStmtCache(db),
		defaultQuota: opts.DefaultQuota,
		log:          log,
		hasher:       passwd.NewHasher(opts.HashMemory, runtime.GOMAXPROCS(0)),
	}
	if opts.AuthCacheTTL > 0 {
		d.cache = passwd.NewCache(opts.AuthCacheTTL, opts.AuthCacheSize)
	}
	if opts.SnapshotMaxEntries > 0 {
		d.snaps = &snapshots{db: db, path: path, maxEntries: opts.SnapshotMaxEntries}
		if d.cache != nil {
			cache := d.cache
			d.snaps.onReload = func(snap *snapshot) {
				cache.Retain(func(addr string) (uint64, bool) {
					r, ok := snap.users[addr]
					return r.pwFP, ok
				})
			}
		}
	}
	if err := d.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// Close closes the database.
func (d *Directory) Close() error {
	if d.snaps != nil {
		d.snaps.Close()
	}
	d.q.Close()
	return d.db.Close()
}

// migrations are applied in order; the schema version is the number applied.
// Never edit one that has shipped: append a new one.
var migrations = []string{
	`CREATE TABLE domains (
		name    TEXT PRIMARY KEY,
		created INTEGER NOT NULL
	);
	CREATE TABLE users (
		address  TEXT PRIMARY KEY,
		domain   TEXT NOT NULL REFERENCES domains(name),
		password TEXT NOT NULL,
		quota    INTEGER NOT NULL DEFAULT 0,
		created  INTEGER NOT NULL
	);
	CREATE INDEX users_domain ON users(domain);
	CREATE TABLE aliases (
		source  TEXT NOT NULL,
		target  TEXT NOT NULL,
		domain  TEXT NOT NULL REFERENCES domains(name),
		created INTEGER NOT NULL,
		PRIMARY KEY (source, target)
	);
	CREATE INDEX aliases_domain ON aliases(domain);`,
}

// migrate brings the schema up to date. SQLite can answer SQLITE_BUSY at
// once, without calling the busy handler, while another process creates the
// same new database and switches it to WAL; so the first start of the
// server and a CLI call at the same moment retry here for busyTimeout.
func (d *Directory) migrate(ctx context.Context) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		err := d.migrateOnce(ctx)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

func (d *Directory) migrateOnce(ctx context.Context) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("creating schema_version: %w", err)
		}
		var version int
		err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
				return fmt.Errorf("initialising schema_version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("reading schema_version: %w", err)
		}
		if version > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this agua (%d); upgrade agua", version, len(migrations))
		}
		for i := version; i < len(migrations); i++ {
			for _, stmt := range strings.Split(migrations[i], ";") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("schema migration %d: %w", i+1, err)
				}
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)); err != nil {
			return fmt.Errorf("updating schema_version: %w", err)
		}
		return nil
	})
}

// tx runs f in a write transaction and commits it if f returns nil.
func (d *Directory) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// exists reports whether query returns a row.
func exists(ctx context.Context, q querier, query string, args ...any) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, query, args...).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("querying the directory: %w", err)
	}
	return true, nil
}

func isLocalDomain(ctx context.Context, q querier, domain string) (bool, error) {
	return exists(ctx, q, `SELECT 1 FROM domains WHERE name = ?`, domain)
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
	return d.tx(ctx, func(tx *sql.Tx) error {
		ok, err := isLocalDomain(ctx, tx, domain)
		if err != nil {
			return err
		}
		if ok {
			return newErr(ErrExists, "domain "+domain+" already exists")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO domains (name, created) VALUES (?, ?)`, domain, time.Now().Unix()); err != nil {
			return fmt.Errorf("adding domain %s: %w", domain, err)
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
	return d.tx(ctx, func(tx *sql.Tx) error {
		if err := requireDomain(ctx, tx, domain); err != nil {
			return err
		}
		var users, aliases int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE domain = ?`, domain).Scan(&users); err != nil {
			return fmt.Errorf("counting users of %s: %w", domain, err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM aliases WHERE domain = ?`, domain).Scan(&aliases); err != nil {
			return fmt.Errorf("counting aliases of %s: %w", domain, err)
		}
		if users > 0 || aliases > 0 {
			return newErr(ErrNotEmpty, fmt.Sprintf("domain %s still has %d users and %d aliases; remove them first", domain, users, aliases))
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM domains WHERE name = ?`, domain); err != nil {
			return fmt.Errorf("removing domain %s: %w", domain, err)
		}
		return nil
	})
}

// ListDomains returns the local domains in alphabetical order.
func (d *Directory) ListDomains(ctx context.Context) ([]string, error) {
	rows, err := d.q.QueryContext(ctx, `SELECT name FROM domains ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing domains: %w", err)
	}
	defer rows.Close()
	var domains []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("listing domains: %w", err)
		}
		domains = append(domains, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing domains: %w", err)
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
	src, err := d.source(ctx)
	if err != nil {
		return false, err
	}
	return src.IsLocalDomain(ctx, domain)
}
