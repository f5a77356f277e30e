package pgaccounts

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/passwd"
)

// snapshot is the whole directory in memory, minus the password hashes (a
// fingerprint of each stands in for it, for the login cache). It is
// immutable once built and implements accounts.Source.
type snapshot struct {
	domains map[string]bool
	list    []string // the domains, sorted
	users   map[string]userRec
	aliases map[string][]string // source -> sorted targets
}

type userRec struct {
	user User
	pwFP uint64 // passwd.Fingerprint of the stored hash
}

func (s *snapshot) User(_ context.Context, addr string) (User, bool, error) {
	r, ok := s.users[addr]
	return r.user, ok, nil
}

func (s *snapshot) Targets(_ context.Context, source string) ([]string, error) {
	return s.aliases[source], nil
}

func (s *snapshot) IsLocalDomain(_ context.Context, domain string) (bool, error) {
	return s.domains[domain], nil
}

// watcher keeps the snapshot and the login cache true across nodes. It
// LISTENs on notifyChannel on a connection of its own; every notification
// (and every write through this Directory) bumps gen, which retires the
// snapshot. While the connection is down (live false) there is no snapshot
// and no cached login: lookups read SQL.
type watcher struct {
	d          *Directory
	maxEntries int // 0: no snapshot, the watcher guards the login cache only
	// dial opens the listening connection (tests hold it back).
	dial func(ctx context.Context) (*pgx.Conn, error)

	mu      sync.Mutex
	live    bool          // listening now
	liveCh  chan struct{} // closed when live becomes true; replaced when it goes false
	gen     uint64        // bumped by every change seen
	snap    *snapshot     // the snapshot of snapGen, nil when none
	snapGen uint64
	tooBig  bool // the directory of snapGen exceeds maxEntries

	loadMu sync.Mutex // one snapshot build at a time
}

// changed retires the snapshot after a change.
func (w *watcher) changed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	w.snap, w.tooBig = nil, false
}

// setLive records the listener's state. Going down drops the snapshot and
// the login cache: changes made meanwhile would not be heard of.
func (w *watcher) setLive(live bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.liveCh == nil {
		w.liveCh = make(chan struct{})
	}
	w.gen++
	w.snap, w.tooBig = nil, false
	if live && !w.live {
		close(w.liveCh)
	}
	if !live {
		if w.live {
			w.liveCh = make(chan struct{})
		}
		if w.d.cache != nil {
			w.d.cache.Clear()
		}
	}
	w.live = live
}

// Live says whether the watcher is listening (for tests and status).
func (d *Directory) Live() bool {
	if d.w == nil {
		return false
	}
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	return d.w.live
}

// waitLive waits up to max for the listener to be up.
func (w *watcher) waitLive(ctx context.Context, max time.Duration) {
	w.mu.Lock()
	if w.liveCh == nil {
		w.liveCh = make(chan struct{})
	}
	ch := w.liveCh
	w.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// Bounds of the listener's reconnection and keepalive.
const (
	retryMin  = 100 * time.Millisecond
	retryMax  = 5 * time.Second
	keepalive = 15 * time.Second // a silent connection is pinged this often
	pingWait  = 5 * time.Second
)

// run listens until ctx is done, reconnecting with backoff.
func (w *watcher) run(ctx context.Context) {
	wait := retryMin
	for {
		err := w.listen(ctx)
		w.setLive(false)
		if ctx.Err() != nil {
			return
		}
		w.d.log.Warn("accounts change listener lost; reading PostgreSQL for every lookup until it is back", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, retryMax)
		if err == nil {
			wait = retryMin
		}
	}
}

// listen connects, LISTENs and handles notifications until the connection
// fails or ctx is done.
func (w *watcher) listen(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, pingWait)
	conn, err := w.dial(cctx)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	lctx, cancel := context.WithTimeout(ctx, pingWait)
	_, err = conn.Exec(lctx, `LISTEN `+notifyChannel)
	cancel()
	if err != nil {
		return err
	}
	w.setLive(true)
	if w.d.log != nil {
		w.d.log.Debug("accounts change listener up")
	}
	for {
		nctx, cancel := context.WithTimeout(ctx, keepalive)
		_, err := conn.WaitForNotification(nctx)
		cancel()
		switch {
		case err == nil:
			w.changed()
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded):
			return err
		}
		// Nothing for a while: make sure the connection is alive, or a
		// network that silently dropped it would leave us deaf.
		pctx, cancel := context.WithTimeout(ctx, pingWait)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// source returns what a lookup reads: the current snapshot when the
// directory keeps one and the listener is up, else SQL.
func (d *Directory) source(ctx context.Context) (accounts.Source, error) {
	w := d.w
	if w == nil || w.maxEntries == 0 {
		return sqlSource{d}, nil
	}
	w.mu.Lock()
	switch {
	case !w.live:
		w.mu.Unlock()
		return sqlSource{d}, nil
	case w.snap != nil && w.snapGen == w.gen:
		s := w.snap
		w.mu.Unlock()
		return s, nil
	case w.tooBig && w.snapGen == w.gen:
		w.mu.Unlock()
		return sqlSource{d}, nil
	}
	w.mu.Unlock()

	w.loadMu.Lock()
	defer w.loadMu.Unlock()
	w.mu.Lock()
	gen, live := w.gen, w.live
	if w.snap != nil && w.snapGen == gen {
		s := w.snap
		w.mu.Unlock()
		return s, nil
	}
	w.mu.Unlock()
	if !live {
		return sqlSource{d}, nil
	}
	// The snapshot is read after gen: a change committed meanwhile bumps
	// gen, and this snapshot, though good for this lookup (it holds every
	// commit made before the lookup began), is not kept.
	snap, err := d.load(ctx, w.maxEntries)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	if w.gen == gen && w.live {
		w.snap, w.snapGen, w.tooBig = snap, gen, snap == nil
	}
	w.mu.Unlock()
	if snap == nil {
		return sqlSource{d}, nil
	}
	if d.cache != nil {
		d.cache.Retain(func(addr string) (uint64, bool) {
			r, ok := snap.users[addr]
			return r.pwFP, ok
		})
	}
	return snap, nil
}

// load reads the whole directory in one repeatable-read transaction, or
// returns nil when it has more than max users and aliases.
func (d *Directory) load(ctx context.Context, max int) (*snapshot, error) {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, dbErr("reading the accounts snapshot", err)
	}
	defer tx.Rollback(context.Background())
	var users, aliases int
	if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts_users), (SELECT count(*) FROM accounts_aliases)`).Scan(&users, &aliases); err != nil {
		return nil, dbErr("counting accounts", err)
	}
	if users+aliases > max {
		return nil, nil
	}
	snap := &snapshot{domains: map[string]bool{}, users: make(map[string]userRec, users), aliases: make(map[string][]string, aliases)}
	rows, err := tx.Query(ctx, `SELECT name FROM accounts_domains ORDER BY name`)
	if err != nil {
		return nil, dbErr("reading domains", err)
	}
	if snap.list, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, dbErr("reading domains", err)
	}
	for _, name := range snap.list {
		snap.domains[name] = true
	}
	rows, err = tx.Query(ctx, `SELECT `+userColumns+`, password FROM accounts_users`)
	if err != nil {
		return nil, dbErr("reading users", err)
	}
	var addr, domain string
	var quota int64
	var created time.Time
	var pw []byte
	_, err = pgx.ForEachRow(rows, []any{&addr, &domain, &quota, &created, &pw}, func() error {
		snap.users[addr] = userRec{user: d.user(addr, domain, quota, created), pwFP: passwd.Fingerprint(pw)}
		return nil
	})
	if err != nil {
		return nil, dbErr("reading users", err)
	}
	rows, err = tx.Query(ctx, `SELECT source, target FROM accounts_aliases ORDER BY source, target`)
	if err != nil {
		return nil, dbErr("reading aliases", err)
	}
	var src, dst string
	_, err = pgx.ForEachRow(rows, []any{&src, &dst}, func() error {
		snap.aliases[src] = append(snap.aliases[src], dst)
		return nil
	})
	if err != nil {
		return nil, dbErr("reading aliases", err)
	}
	return snap, nil
}
