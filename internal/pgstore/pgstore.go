// Package pgstore is agua's mail store on PostgreSQL (issue 17), so that
// every node of a cluster serves every user: it implements the mail-store
// contract of internal/mailstore (Store, Folder, UIDKeeper) for POP3 and
// IMAP, and final delivery for internal/router (MailboxWriter).
//
// # Tables
//
// See Migrations: users with their quota usage, folders with UIDVALIDITY,
// UIDNEXT and a modification sequence, messages with UID, size, flags,
// internal date, New (IMAP \Recent) and the id of their body, kept by a
// Blobs (bytea in mail_blobs here; an object store could keep them).
// Every change of a folder runs in one transaction that also updates the
// user's usage, so the quota figure is exact, and a UID is taken from
// UIDNEXT in the transaction that stores its message (UPDATE … SET uidnext
// = uidnext + n RETURNING), so UIDs are unique and ascending across nodes,
// never reused, and the same for POP3 (UIDL) and IMAP.
//
// Transactions lock rows in one order, user, then folder, then messages,
// so that they wait for each other instead of deadlocking; a deadlock or
// serialization failure PostgreSQL reports anyway is "unavailable, try
// again" (internal/pg.Classify).
//
// # Delivery
//
// Deliver hands each delivery to a committer, which takes every delivery
// queued meanwhile and stores the batch in one transaction: one COMMIT,
// one WAL flush, for many messages (group commit). Deliver returns only
// after COMMIT returned, so SMTP's 250 after DATA means the message is on
// PostgreSQL's disk; a database that is down or cut off gives an error
// matching mailstore.ErrUnavailable (451 4.3.0), and nothing is
// acknowledged that was not committed. If the connection dies during
// COMMIT the outcome is unknown: the sender was not acknowledged and will
// retry, so the message may arrive twice, never zero times.
//
// # Locks and change notification
//
// POP3's maildrop lock (RFC 1939 8) is a session advisory lock
// (pg_try_advisory_lock) on a connection of its own, held by the Folder
// until unlock or Close; PostgreSQL releases it when the node dies and its
// connection ends. Every change of a folder raises its modification
// sequence and sends NOTIFY agua_mail with the folder id in the same
// transaction; one LISTEN connection per process marks the open folders
// changed, so that Folder.Stamp, which IMAP IDLE polls, answers from
// memory until something changed, on this node or another. While that
// connection is down Stamp asks the database and says it is not settled,
// so pollers list.
package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/pg"
)

// Options configure a Store.
type Options struct {
	// Logger receives events the operator should know about (the change
	// listener's connection lost and back); nil discards them.
	Logger *slog.Logger
	// MaxBatch is the most deliveries one transaction takes; 256 if zero.
	MaxBatch int
	// Committers is how many delivery transactions may run at once; 2 if
	// zero (one commits while the next batch is being written).
	Committers int
	// OpTimeout bounds every call's database work; 30 s if zero.
	OpTimeout time.Duration
	// Blobs keeps the bodies; the table mail_blobs if nil.
	Blobs Blobs
}

const (
	defaultMaxBatch   = 256
	defaultCommitters = 2
	defaultOpTimeout  = 30 * time.Second
	// maxBatchBytes bounds the bodies of one delivery transaction.
	maxBatchBytes = 64 << 20
)

// ErrClosed is returned by Deliver after Close.
var ErrClosed = errors.New("pgstore: store is closed")

// Store is the mail store on one PostgreSQL database. It is safe for
// concurrent use; several Stores (nodes) may share the database.
type Store struct {
	pool      *pgxpool.Pool
	blobs     Blobs
	log       *slog.Logger
	maxBatch  int
	opTimeout time.Duration
	hub       *hub
	batches   atomic.Int64 // delivery transactions committed, for benchmarks
	committed atomic.Int64 // deliveries in them

	closeMu sync.RWMutex // held for reading while sending to queue
	closed  bool
	queue   chan *delivery
	wg      sync.WaitGroup // committers
}

var (
	_ mailstore.Store          = (*Store)(nil)
	_ mailstore.DefaultsKeeper = (*Store)(nil)
)

// Open returns the store on pool, whose database must have Migrations
// applied, and starts its committers and change listener. It does not
// wait for the database: a store opened while PostgreSQL is down serves
// once it is back.
func Open(pool *pgxpool.Pool, o Options) *Store {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = defaultMaxBatch
	}
	if o.Committers <= 0 {
		o.Committers = defaultCommitters
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = defaultOpTimeout
	}
	if o.Blobs == nil {
		o.Blobs = dbBlobs{pool}
	}
	s := &Store{pool: pool, blobs: o.Blobs, log: o.Logger, maxBatch: o.MaxBatch, opTimeout: o.OpTimeout,
		queue: make(chan *delivery, o.MaxBatch)}
	s.hub = newHub(s)
	for range o.Committers {
		s.wg.Go(s.committer)
	}
	return s
}

// Close waits for the deliveries queued, stops the committers and the
// change listener. Deliver fails with ErrClosed afterwards; Folders still
// open keep working on the pool.
func (s *Store) Close() error {
	s.closeMu.Lock()
	first := !s.closed
	if first {
		s.closed = true
		close(s.queue)
	}
	s.closeMu.Unlock()
	s.wg.Wait()
	if first {
		s.hub.close()
	}
	return nil
}

// op returns ctx bounded by the store's operation timeout.
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opTimeout)
}

// dbErr names the failed operation and marks a database that cannot serve
// with both mailstore.ErrUnavailable and pg.ErrUnavailable. The contract's
// sentinel errors pass as they are.
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []error{mailstore.ErrNoFolder, mailstore.ErrBadFolder, mailstore.ErrFolderExists,
		mailstore.ErrNoMessage, mailstore.ErrLocked, mailstore.ErrForeignFolder, mailstore.ErrNotEmpty,
		mailstore.ErrBadUID, ErrClosed} {
		if errors.Is(err, e) {
			return err
		}
	}
	var qe *mailstore.QuotaError
	if errors.As(err, &qe) {
		return err
	}
	if err = pg.Classify(err); errors.Is(err, pg.ErrUnavailable) {
		return fmt.Errorf("pgstore: %s: %w: %w", op, mailstore.ErrUnavailable, err)
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

// inTx runs f in a transaction under the operation timeout. A transaction
// PostgreSQL ended to break a deadlock or a serialization conflict is run
// again (f must start from scratch each time: it sees nothing of the
// rolled-back attempt); two nodes creating a user's INBOX while delivering
// to it can deadlock on the foreign key's row lock (storetest
// NodesShareUIDs found it in CI).
func (s *Store) inTx(ctx context.Context, op string, f func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	err := retryConflict(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return f(ctx, tx) })
	})
	return dbErr(op, err)
}

// conflictAttempts bounds the runs of a transaction that keeps losing
// deadlocks or serialization conflicts; then the error goes to the caller
// (ErrUnavailable: a temporary failure).
const conflictAttempts = 5

// retryConflict runs f again, after a short random pause, while it fails
// with a deadlock (40P01) or a serialization failure (40001).
func retryConflict(ctx context.Context, f func() error) error {
	var err error
	for attempt := 0; attempt < conflictAttempts; attempt++ {
		if err = f(); !conflictErr(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(1+rand.IntN(10*(attempt+1))) * time.Millisecond):
		}
	}
	return err
}

func conflictErr(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// validUser refuses what a text column cannot hold, so that one bad
// address cannot fail a whole delivery batch.
func validUser(user string) error {
	if user == "" || !utf8.ValidString(user) || strings.IndexByte(user, 0) >= 0 {
		return fmt.Errorf("pgstore: invalid user %q", user)
	}
	return nil
}

// folderKey maps a contract folder name to the stored one ("" is INBOX).
func folderKey(name string) (string, error) {
	if name == "" || strings.EqualFold(name, "INBOX") {
		return "", nil
	}
	if !mailstore.ValidFolderName(name) || !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: %q", mailstore.ErrBadFolder, name)
	}
	return name, nil
}

// namedFolder is folderKey for a folder other than INBOX.
func namedFolder(name string) (string, error) {
	if name == "" || strings.EqualFold(name, "INBOX") {
		return "", fmt.Errorf("%w: INBOX", mailstore.ErrBadFolder)
	}
	return folderKey(name)
}

// lockUser makes the user's row if needed and locks it for the
// transaction (user rows are always locked first), returning its usage.
func lockUser(ctx context.Context, tx pgx.Tx, user string) (int64, error) {
	var used int64
	err := tx.QueryRow(ctx, `INSERT INTO mail_users (usr) VALUES ($1)
ON CONFLICT (usr) DO UPDATE SET usr = EXCLUDED.usr RETURNING used`, user).Scan(&used)
	return used, err
}

// touch raises the modification sequence of folders and notifies the
// listeners at commit; it returns how many of them exist.
func touch(ctx context.Context, tx pgx.Tx, ids ...int64) (int, error) {
	var n int
	err := tx.QueryRow(ctx, `WITH f AS (UPDATE mail_folders SET modseq = modseq + 1 WHERE id = ANY($1) RETURNING id)
SELECT count(pg_notify('`+notifyChannel+`', id::text)) FROM f`, ids).Scan(&n)
	return n, err
}

// Folder opens a folder; INBOX is made on first use.
func (s *Store) Folder(ctx context.Context, user, name string) (mailstore.Folder, error) {
	if err := validUser(user); err != nil {
		return nil, err
	}
	key, err := folderKey(name)
	if err != nil {
		return nil, err
	}
	octx, cancel := s.op(ctx)
	defer cancel()
	const find = `SELECT id FROM mail_folders WHERE usr = $1 AND name = $2`
	var id int64
	err = retryConflict(octx, func() error {
		err := s.pool.QueryRow(octx, find, user, key).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) && key == "" {
			if _, err = s.pool.Exec(octx, `INSERT INTO mail_users (usr) VALUES ($1) ON CONFLICT DO NOTHING`, user); err == nil {
				if _, err = s.pool.Exec(octx, `INSERT INTO mail_folders (usr, name) VALUES ($1, '') ON CONFLICT DO NOTHING`, user); err == nil {
					err = s.pool.QueryRow(octx, find, user, key).Scan(&id)
				}
			}
		}
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", mailstore.ErrNoFolder, name)
	}
	if err != nil {
		return nil, dbErr("opening folder", err)
	}
	return &folder{s: s, ctx: ctx, user: user, name: key, id: id, w: s.hub.watch(id)}, nil
}

// CreateFolder creates a folder; ErrFolderExists, ErrBadFolder.
func (s *Store) CreateFolder(ctx context.Context, user, name string) error {
	if err := validUser(user); err != nil {
		return err
	}
	key, err := namedFolder(name)
	if err != nil {
		return err
	}
	return s.inTx(ctx, "creating folder", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO mail_users (usr) VALUES ($1) ON CONFLICT DO NOTHING`, user); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO mail_folders (usr, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, user, key)
		if err == nil && tag.RowsAffected() == 0 {
			err = fmt.Errorf("%w: %s", mailstore.ErrFolderExists, name)
		}
		return err
	})
}

// DeleteFolder removes a folder and its messages; folders below it stay.
func (s *Store) DeleteFolder(ctx context.Context, user, name string) error {
	key, err := namedFolder(name)
	if err != nil {
		return err
	}
	var id int64
	err = s.inTx(ctx, "deleting folder", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := lockUser(ctx, tx, user); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT id FROM mail_folders WHERE usr = $1 AND name = $2 FOR UPDATE`, user, key).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", mailstore.ErrNoFolder, name)
		}
		if err != nil {
			return err
		}
		if _, err := s.expunge(ctx, tx, user, id, nil); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM mail_folders WHERE id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', $1::bigint::text)`, id)
		return err
	})
	if err == nil {
		s.hub.changed(id)
	}
	return err
}

// expunge deletes messages of folder id (all of them if uids is nil) with
// their bodies and takes their bytes off the user's usage; the user's row
// must be locked. It returns the UIDs deleted.
func (s *Store) expunge(ctx context.Context, tx pgx.Tx, user string, id int64, uids []uint32) ([]uint32, error) {
	var rows pgx.Rows
	var err error
	if uids == nil {
		rows, err = tx.Query(ctx, `DELETE FROM mail_messages WHERE folder = $1 RETURNING uid, size, blob`, id)
	} else {
		rows, err = tx.Query(ctx, `DELETE FROM mail_messages WHERE folder = $1 AND uid = ANY($2) RETURNING uid, size, blob`, id, uids)
	}
	if err != nil {
		return nil, err
	}
	var gone []uint32
	var blobs []int64
	var bytes int64
	var uid, size, blob int64
	_, err = pgx.ForEachRow(rows, []any{&uid, &size, &blob}, func() error {
		gone = append(gone, uint32(uid))
		blobs = append(blobs, blob)
		bytes += size
		return nil
	})
	if err != nil || len(gone) == 0 {
		return nil, err
	}
	if err := s.blobs.Delete(ctx, tx, blobs); err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, `UPDATE mail_users SET used = used - $2 WHERE usr = $1`, user, bytes)
	return gone, err
}

// RenameFolder renames a folder and those below it, keeping their rows:
// messages, UIDs and UIDVALIDITY stay.
func (s *Store) RenameFolder(ctx context.Context, user, from, to string) error {
	src, err := namedFolder(from)
	if err != nil {
		return err
	}
	dst, err := namedFolder(to)
	if err != nil {
		return err
	}
	if strings.HasPrefix(dst, src+".") {
		return fmt.Errorf("%w: %s below itself", mailstore.ErrBadFolder, to)
	}
	var ids []int64
	err = s.inTx(ctx, "renaming folder", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := lockUser(ctx, tx, user); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM mail_folders WHERE usr = $1 AND name = $2)`, user, src).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("%w: %s", mailstore.ErrNoFolder, from)
		}
		if src == dst {
			return fmt.Errorf("%w: %s", mailstore.ErrFolderExists, to)
		}
		rows, err := tx.Query(ctx, `UPDATE mail_folders SET name = $3 || substr(name, length($2) + 1)
WHERE usr = $1 AND (name = $2 OR left(name, length($2) + 1) = $2 || '.') RETURNING id`, user, src, dst)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		if uniqueViolation(err) {
			return fmt.Errorf("%w: %s", mailstore.ErrFolderExists, to)
		}
		if err != nil {
			return err
		}
		_, err = touch(ctx, tx, ids...)
		return err
	})
	if err == nil {
		s.hub.changed(ids...)
	}
	return err
}

// ListFolders returns the user's folders but INBOX, sorted bytewise.
func (s *Store) ListFolders(ctx context.Context, user string) ([]string, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT name FROM mail_folders WHERE usr = $1 AND name <> '' ORDER BY name COLLATE "C"`, user)
	if err != nil {
		return nil, dbErr("listing folders", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return names, dbErr("listing folders", err)
}

// DefaultFoldersMade is mailstore.DefaultsKeeper: mail_users.defaults_made
// (false for a user without a row).
func (s *Store) DefaultFoldersMade(ctx context.Context, user string) (bool, error) {
	if err := validUser(user); err != nil {
		return false, err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	var made bool
	err := s.pool.QueryRow(ctx, `SELECT defaults_made FROM mail_users WHERE usr = $1`, user).Scan(&made)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return made, dbErr("reading default folders", err)
}

// CreateDefaultFolders creates names the first time it is called for user.
func (s *Store) CreateDefaultFolders(ctx context.Context, user string, names []string) error {
	if err := validUser(user); err != nil {
		return err
	}
	keys := make([]string, len(names))
	for i, n := range names {
		k, err := namedFolder(n)
		if err != nil {
			return err
		}
		keys[i] = k
	}
	// Every IMAP login asks: a read answers it after the first time,
	// without a transaction to flush.
	qctx, cancel := s.op(ctx)
	var made bool
	err := s.pool.QueryRow(qctx, `SELECT defaults_made FROM mail_users WHERE usr = $1`, user).Scan(&made)
	cancel()
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return dbErr("creating default folders", err)
	}
	if made {
		return nil
	}
	return s.inTx(ctx, "creating default folders", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := lockUser(ctx, tx, user); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE mail_users SET defaults_made = true WHERE usr = $1 AND NOT defaults_made`, user)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO mail_folders (usr, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING`, user, keys)
		return err
	})
}

// Usage returns the bytes in all of the user's folders.
func (s *Store) Usage(ctx context.Context, user string) (int64, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var used int64
	err := s.pool.QueryRow(ctx, `SELECT used FROM mail_users WHERE usr = $1`, user).Scan(&used)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return used, dbErr("reading usage", err)
}

// Used is Usage for the quota check at RCPT time (router.MailboxWriter).
func (s *Store) Used(ctx context.Context, mailbox string) (int64, error) {
	return s.Usage(ctx, mailbox)
}

// reader is a body read into memory, as Folder.Open returns it.
type reader struct{ *bytes.Reader }

func (reader) Close() error { return nil }
