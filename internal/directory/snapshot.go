package directory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agua-mail/agua/internal/passwd"
)

// snapshot is the whole directory in memory, minus the password hashes (a
// 64-bit fingerprint of each stands in for it, for the credential cache):
// what Resolve, CanSendAs, IsLocalDomain, ListDomains and Authenticate's
// user lookup read instead of SQL. It is immutable once built; a change to
// the database builds a new one.
//
// Memory: per user one map slot (the address as key, a userRec of 56 bytes)
// plus the address's bytes: 155 bytes per user with 22-byte addresses, as
// measured by BenchmarkSnapshotMemory; per alias about as much. Domain names
// are shared by their users. A change rebuilds the whole snapshot (about
// 4 µs per user on a loaded 2-core machine, old and new held together for
// that moment), which is why Options.SnapshotMaxEntries bounds it.
type snapshot struct {
	version int64             // PRAGMA data_version when it was read
	domains map[string]string // local domains, each mapped to itself (its users share the string)
	list    []string          // the same, sorted
	users   map[string]userRec
	aliases map[string][]string // source ("a@d" or "@d") -> sorted targets
}

// userRec is a user as the snapshot keeps it.
type userRec struct {
	address, domain string
	quotaSet        int64
	created         int64  // Unix seconds
	pwFP            uint64 // fingerprint of the stored password hash
}

func (r userRec) user(defaultQuota int64) User {
	u := User{Address: r.address, Domain: r.domain, QuotaSet: r.quotaSet, Quota: r.quotaSet, Created: time.Unix(r.created, 0)}
	if u.Quota == 0 {
		u.Quota = defaultQuota
	}
	return u
}

// snapshots keeps the current snapshot and notices changes to the database.
//
// SQLite's PRAGMA data_version, asked on one connection that never writes,
// changes whenever any other connection (this process's pool, the CLI, any
// other program) commits. Every lookup makes sure nothing was committed
// since the snapshot was read, so a change made by the CLI applies to the
// very next RCPT, as it did when every lookup was SQL: first by comparing
// the WAL-index header with the one seen then (walindex.go, nanoseconds,
// no lock), and only when that differs by asking data_version (a statement,
// about 10 µs). When the version has changed the snapshot is rebuilt, under
// the lock, so lookups wait for the fresh one rather than read a stale one.
type snapshots struct {
	db         *sql.DB
	path       string // the database file, whose WAL index is mapped
	maxEntries int    // users + aliases beyond which lookups stay in SQL
	onReload   func(*snapshot)

	// checked is the last confirmed state: the WAL-index header read just
	// before data_version was asked, and the snapshot for that version
	// (nil when too big). Lookups that find the same header use it.
	checked atomic.Pointer[checkedState]
	walMu   sync.RWMutex // held to read the mapping; to map and unmap it, with mu too
	wal     *walIndex    // nil: not mapped, every lookup asks data_version

	mu      sync.Mutex
	conn    *sql.Conn // dedicated: never used for writes
	version *sql.Stmt // PRAGMA data_version on conn
	cur     *snapshot // nil: not built, or too big (see tooBig)
	tooBig  bool      // cur is nil because the directory exceeds maxEntries
	tooAt   int64     // the data_version at which it was found too big

	reloads  atomic.Int64 // snapshots built, for tests
	versions atomic.Int64 // data_version statements run, for tests
}

// errSnapshotUnstable: the database kept changing while it was read.
var errSnapshotUnstable = errors.New("the accounts database changed during every attempt to read it")

type checkedState struct {
	hdr  walHeader
	snap *snapshot
}

// current returns the snapshot that reflects every commit made before the
// call, or nil when the directory is too big to hold (the caller uses SQL).
func (s *snapshots) current(ctx context.Context) (*snapshot, error) {
	if c := s.checked.Load(); c != nil {
		s.walMu.RLock()
		h, ok := s.wal.header()
		s.walMu.RUnlock()
		if ok && h == c.hdr {
			return c.snap, nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked.Store(nil)
	// The header is read before data_version: a commit in between makes
	// the next lookup see a different header and check again.
	var hdr walHeader
	hdrOK := false
	if s.wal != nil {
		hdr, hdrOK = s.wal.header()
	}
	snap, err := s.check(ctx)
	if err == nil && hdrOK {
		s.checked.Store(&checkedState{hdr: hdr, snap: snap})
	}
	return snap, err
}

// check asks data_version and rebuilds the snapshot if it changed.
func (s *snapshots) check(ctx context.Context) (*snapshot, error) {
	v, err := s.dataVersion(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case s.cur != nil && s.cur.version == v:
		return s.cur, nil
	case s.tooBig && s.tooAt == v:
		return nil, nil
	}
	// Read until the version is the same before and after: then nothing
	// was committed in between and the snapshot is consistent.
	for range 3 {
		snap, err := s.load(ctx, v)
		if err != nil {
			return nil, err
		}
		after, err := s.dataVersion(ctx)
		if err != nil {
			return nil, err
		}
		if after != v {
			v = after
			continue
		}
		s.cur, s.tooBig, s.tooAt = snap, snap == nil, v
		s.reloads.Add(1)
		if snap != nil && s.onReload != nil {
			s.onReload(snap)
		}
		return snap, nil
	}
	s.cur, s.tooBig = nil, false
	return nil, errSnapshotUnstable
}

// dataVersion asks the dedicated connection, (re)opening it as needed.
func (s *snapshots) dataVersion(ctx context.Context) (int64, error) {
	if s.conn == nil {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return 0, fmt.Errorf("opening the accounts snapshot connection: %w", err)
		}
		st, err := conn.PrepareContext(ctx, `PRAGMA data_version`)
		if err != nil {
			conn.Close()
			return 0, fmt.Errorf("preparing data_version: %w", err)
		}
		// Versions of another connection are not comparable.
		s.conn, s.version, s.cur, s.tooBig = conn, st, nil, false
	}
	var v int64
	s.versions.Add(1)
	if err := s.version.QueryRowContext(ctx).Scan(&v); err != nil {
		s.closeConn()
		return 0, fmt.Errorf("reading the accounts data_version: %w", err)
	}
	if s.wal == nil && s.path != "" {
		// Mapped once the connection has the database open in WAL mode
		// (the statement above made sure of that).
		s.walMu.Lock()
		s.wal = openWALIndex(s.path)
		s.walMu.Unlock()
	}
	return v, nil
}

func (s *snapshots) closeConn() {
	s.checked.Store(nil)
	// Unmapped before the connection that keeps the WAL index in place
	// (SQLite may truncate it once no connection has it open) is closed.
	s.walMu.Lock()
	s.wal.Close()
	s.wal = nil
	s.walMu.Unlock()
	if s.conn != nil {
		s.version.Close()
		s.conn.Close()
		s.conn, s.version, s.cur, s.tooBig = nil, nil, nil, false
	}
}

func (s *snapshots) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeConn()
}

// load reads the whole directory, or returns nil when it has more than
// maxEntries users and aliases.
func (s *snapshots) load(ctx context.Context, version int64) (*snapshot, error) {
	var users, aliases int
	if err := s.conn.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM aliases)`).Scan(&users, &aliases); err != nil {
		return nil, fmt.Errorf("counting accounts: %w", err)
	}
	if users+aliases > s.maxEntries {
		return nil, nil
	}
	snap := &snapshot{
		version: version,
		domains: map[string]string{},
		users:   make(map[string]userRec, users),
		aliases: make(map[string][]string, aliases),
	}
	err := s.rows(ctx, `SELECT name FROM domains ORDER BY name`, func(rows *sql.Rows) error {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		snap.domains[name] = name
		snap.list = append(snap.list, name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading domains: %w", err)
	}
	err = s.rows(ctx, `SELECT address, domain, quota, created, password FROM users`, func(rows *sql.Rows) error {
		var r userRec
		var pw sql.RawBytes
		if err := rows.Scan(&r.address, &r.domain, &r.quotaSet, &r.created, &pw); err != nil {
			return err
		}
		r.pwFP = passwd.Fingerprint(pw)
		if d, ok := snap.domains[r.domain]; ok {
			r.domain = d // one string per domain, shared by its users
		}
		snap.users[r.address] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	err = s.rows(ctx, `SELECT source, target FROM aliases ORDER BY source, target`, func(rows *sql.Rows) error {
		var src, dst string
		if err := rows.Scan(&src, &dst); err != nil {
			return err
		}
		snap.aliases[src] = append(snap.aliases[src], dst)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading aliases: %w", err)
	}
	return snap, nil
}

func (s *snapshots) rows(ctx context.Context, query string, f func(*sql.Rows) error) error {
	rows, err := s.conn.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
