package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/mailstore"
)

// folder is one open folder: the row id it was opened on and the name it
// had then (a rename or delete ends it: ErrNoFolder from Stamp and List).
type folder struct {
	s    *Store
	ctx  context.Context // the session's
	user string
	name string // "" is INBOX
	id   int64
	w    *watch

	mu     sync.Mutex
	unlock func() // the maildrop lock held, if any
	closed bool
}

var (
	_ mailstore.Folder    = (*folder)(nil)
	_ mailstore.UIDKeeper = (*folder)(nil)
)

func (f *folder) gone() error { return fmt.Errorf("%w: %q", mailstore.ErrNoFolder, f.name) }

// change runs a transaction changing the folder and, once it committed,
// marks the folder changed for this process's Stamps.
func (f *folder) change(op string, fn func(ctx context.Context, tx pgx.Tx) error) error {
	err := f.s.inTx(f.ctx, op, fn)
	if err == nil {
		f.s.hub.changed(f.id)
	}
	return err
}

// List reads the folder and its messages in one snapshot: messages at or
// above the UIDNEXT read are left out, so a delivery committing meanwhile
// shows in the next listing, whole.
func (f *folder) List() (mailstore.Listing, error) {
	ctx, cancel := f.s.op(f.ctx)
	defer cancel()
	var l mailstore.Listing
	var name string
	var validity, next int64
	err := f.s.pool.QueryRow(ctx, `SELECT name, uidvalidity, uidnext FROM mail_folders WHERE id = $1`, f.id).Scan(&name, &validity, &next)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && name != f.name) {
		return l, f.gone()
	}
	if err != nil {
		return l, dbErr("listing", err)
	}
	l.UIDValidity, l.UIDNext = uint32(validity), uint32(next)
	rows, err := f.s.pool.Query(ctx, `SELECT uid, size, flags, new FROM mail_messages WHERE folder = $1 AND uid < $2 ORDER BY uid`, f.id, next)
	if err != nil {
		return l, dbErr("listing", err)
	}
	var m mailstore.Message
	var uid int64
	_, err = pgx.ForEachRow(rows, []any{&uid, &m.Size, &m.Flags, &m.New}, func() error {
		m.UID = uint32(uid)
		l.Messages = append(l.Messages, m)
		return nil
	})
	return l, dbErr("listing", err)
}

// Stamp is the folder's modification sequence, from memory while the
// change listener is connected and nothing changed since it was read.
func (f *folder) Stamp() (mailstore.Stamp, bool, error) {
	st, settled, err := f.s.hub.stamp(f)
	return st, settled, err
}

// Open reads message uid into memory.
func (f *folder) Open(uid uint32) (io.ReadSeekCloser, int64, error) {
	ctx, cancel := f.s.op(f.ctx)
	defer cancel()
	var blob, size int64
	err := f.s.pool.QueryRow(ctx, `SELECT blob, size FROM mail_messages WHERE folder = $1 AND uid = $2`, f.id, uid).Scan(&blob, &size)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("%w: %d", mailstore.ErrNoMessage, uid)
	}
	if err != nil {
		return nil, 0, dbErr("opening message", err)
	}
	data, err := f.s.blobs.Get(ctx, blob)
	if errors.Is(err, errBlobMissing) {
		// Expunged between the two reads.
		return nil, 0, fmt.Errorf("%w: %d", mailstore.ErrNoMessage, uid)
	}
	if err != nil {
		return nil, 0, dbErr("opening message", err)
	}
	if int64(len(data)) != size {
		return nil, 0, fmt.Errorf("pgstore: message %d of folder %d holds %d bytes, its row says %d", uid, f.id, len(data), size)
	}
	return reader{bytes.NewReader(data)}, size, nil
}

// ModTime returns the message's internal date.
func (f *folder) ModTime(uid uint32) (time.Time, error) {
	ctx, cancel := f.s.op(f.ctx)
	defer cancel()
	var t time.Time
	err := f.s.pool.QueryRow(ctx, `SELECT internal_date FROM mail_messages WHERE folder = $1 AND uid = $2`, f.id, uid).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("%w: %d", mailstore.ErrNoMessage, uid)
	}
	return t, dbErr("reading internal date", err)
}

// MarkSeen ends New; it is not a change of the folder's state that other
// sessions must be told of (IMAP \Recent is per session anyway).
func (f *folder) MarkSeen(uids []uint32) error {
	if len(uids) == 0 {
		return nil
	}
	ctx, cancel := f.s.op(f.ctx)
	defer cancel()
	_, err := f.s.pool.Exec(ctx, `UPDATE mail_messages SET new = false WHERE folder = $1 AND uid = ANY($2) AND new`, f.id, uids)
	return dbErr("marking seen", err)
}

// SetFlags adds, then removes flag letters (mail_flags keeps them sorted
// and unique) and ends New.
func (f *folder) SetFlags(uids []uint32, add, remove string) error {
	if len(uids) == 0 {
		return nil
	}
	return f.change("setting flags", func(ctx context.Context, tx pgx.Tx) error {
		if n, err := touch(ctx, tx, f.id); err != nil || n == 0 {
			return err // a deleted folder has no messages to flag
		}
		_, err := tx.Exec(ctx, `UPDATE mail_messages SET flags = mail_flags(flags, $3, $4), new = false
WHERE folder = $1 AND uid = ANY($2)`, f.id, uids, add, remove)
		return err
	})
}

// Delete expunges messages with their bodies.
func (f *folder) Delete(uids []uint32) error {
	if len(uids) == 0 {
		return nil
	}
	return f.change("expunging", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := lockUser(ctx, tx, f.user); err != nil {
			return err
		}
		if n, err := touch(ctx, tx, f.id); err != nil || n == 0 {
			return err
		}
		_, err := f.s.expunge(ctx, tx, f.user, f.id, uids)
		return err
	})
}

// readBody reads exactly size bytes of r.
func readBody(r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		return nil, fmt.Errorf("pgstore: negative message size %d", size)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(size, 1<<26)))
	n, err := io.Copy(&buf, io.LimitReader(r, size+1))
	if err != nil {
		return nil, fmt.Errorf("pgstore: reading message: %w", err)
	}
	if n != size {
		return nil, fmt.Errorf("pgstore: message is %d bytes, expected %d", n, size)
	}
	return buf.Bytes(), nil
}

// Append stores a message read from r.
func (f *folder) Append(r io.Reader, size int64, flags string, date time.Time) (uint32, uint32, error) {
	body, err := readBody(r, size)
	if err != nil {
		return 0, 0, err
	}
	if date.IsZero() {
		date = time.Now()
	}
	var uid, validity int64
	err = f.change("appending", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE mail_users SET used = used + $2 WHERE usr = $1`, f.user, size); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `WITH f AS (UPDATE mail_folders SET uidnext = uidnext + 1, modseq = modseq + 1 WHERE id = $1 RETURNING id, uidnext - 1 AS uid, uidvalidity)
SELECT uid, uidvalidity FROM f, pg_notify('`+notifyChannel+`', f.id::text)`, f.id).Scan(&uid, &validity)
		if errors.Is(err, pgx.ErrNoRows) {
			return f.gone()
		}
		if err != nil {
			return err
		}
		return f.insert(ctx, tx, []int64{uid}, [][]byte{body}, flags, date, false)
	})
	return uint32(uid), uint32(validity), err
}

// insert stores messages with their bodies under the given UIDs.
func (f *folder) insert(ctx context.Context, tx pgx.Tx, uids []int64, bodies [][]byte, flags string, date time.Time, isNew bool) error {
	blobs, err := f.s.blobs.Put(ctx, tx, bodies)
	if err != nil {
		return err
	}
	sizes := make([]int64, len(bodies))
	for i, b := range bodies {
		sizes[i] = int64(len(b))
	}
	_, err = tx.Exec(ctx, `INSERT INTO mail_messages (folder, uid, size, flags, internal_date, new, blob)
SELECT $1, u, s, mail_flags('', $4, ''), $5, $6, b FROM unnest($2::bigint[], $3::bigint[], $7::bigint[]) AS t(u, s, b)`,
		f.id, uids, sizes, flags, date, isNew, blobs)
	return err
}

// CopyTo copies messages into dst, a folder of the same Store, with their
// flags and internal dates; the copies are not New.
func (f *folder) CopyTo(dstF mailstore.Folder, uids []uint32) (src, dest []uint32, validity uint32, err error) {
	dst, ok := dstF.(*folder)
	if !ok || dst.s != f.s {
		return nil, nil, 0, mailstore.ErrForeignFolder
	}
	err = f.s.inTx(f.ctx, "copying", func(ctx context.Context, tx pgx.Tx) error {
		src, dest = nil, nil
		// Users first, in order: a copy may go to another user's folder.
		for _, u := range sortedUnique(f.user, dst.user) {
			if _, err := lockUser(ctx, tx, u); err != nil {
				return err
			}
		}
		var v int64
		err := tx.QueryRow(ctx, `SELECT uidvalidity FROM mail_folders WHERE id = $1 FOR UPDATE`, dst.id).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return dst.gone()
		}
		if err != nil {
			return err
		}
		validity = uint32(v)
		rows, err := tx.Query(ctx, `SELECT uid, size, flags, internal_date, blob FROM mail_messages
WHERE folder = $1 AND uid = ANY($2) ORDER BY uid FOR SHARE`, f.id, uids)
		if err != nil {
			return err
		}
		var sizes, blobs []int64
		var flags []string
		var dates []time.Time
		var uid, size, blob int64
		var fl string
		var date time.Time
		if _, err := pgx.ForEachRow(rows, []any{&uid, &size, &fl, &date, &blob}, func() error {
			src = append(src, uint32(uid))
			sizes, flags, dates, blobs = append(sizes, size), append(flags, fl), append(dates, date), append(blobs, blob)
			return nil
		}); err != nil || len(src) == 0 {
			return err
		}
		var first int64
		if err := tx.QueryRow(ctx, `WITH f AS (UPDATE mail_folders SET uidnext = uidnext + $2, modseq = modseq + 1 WHERE id = $1 RETURNING id, uidnext - $2 AS first)
SELECT first FROM f, pg_notify('`+notifyChannel+`', f.id::text)`, dst.id, len(src)).Scan(&first); err != nil {
			return err
		}
		copies, err := f.s.blobs.Copy(ctx, tx, blobs)
		if err != nil {
			return err
		}
		newUIDs := make([]int64, len(src))
		var total int64
		for i := range src {
			newUIDs[i] = first + int64(i)
			dest = append(dest, uint32(newUIDs[i]))
			total += sizes[i]
		}
		if _, err := tx.Exec(ctx, `INSERT INTO mail_messages (folder, uid, size, flags, internal_date, new, blob)
SELECT $1, u, s, fl, d, false, b FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::timestamptz[], $6::bigint[]) AS t(u, s, fl, d, b)`,
			dst.id, newUIDs, sizes, flags, dates, copies); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE mail_users SET used = used + $2 WHERE usr = $1`, dst.user, total)
		return err
	})
	if err != nil {
		return nil, nil, 0, err
	}
	f.s.hub.changed(dst.id)
	return src, dest, validity, nil
}

func sortedUnique(a, b string) []string {
	switch {
	case a == b:
		return []string{a}
	case a < b:
		return []string{a, b}
	}
	return []string{b, a}
}

// SetUIDs gives the folder a UIDVALIDITY and UIDNEXT (mailstore.UIDKeeper).
func (f *folder) SetUIDs(validity, next uint32) error {
	return f.change("setting UIDs", func(ctx context.Context, tx pgx.Tx) error {
		var own, ownNext int64
		err := tx.QueryRow(ctx, `SELECT uidvalidity, uidnext FROM mail_folders WHERE id = $1 FOR UPDATE`, f.id).Scan(&own, &ownNext)
		if errors.Is(err, pgx.ErrNoRows) {
			return f.gone()
		}
		if err != nil {
			return err
		}
		var full bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM mail_messages WHERE folder = $1)`, f.id).Scan(&full); err != nil {
			return err
		}
		switch {
		case full && (int64(validity) != own || int64(next) < ownNext):
			return fmt.Errorf("%w: UIDVALIDITY %d, UIDNEXT %d", mailstore.ErrNotEmpty, own, ownNext)
		case int64(validity) == own:
			// The same UIDVALIDITY never hands out a UID twice.
			next = uint32(max(int64(next), ownNext))
		}
		if _, err := tx.Exec(ctx, `UPDATE mail_folders SET uidvalidity = $2, uidnext = $3 WHERE id = $1`, f.id, int64(validity), int64(next)); err != nil {
			return err
		}
		_, err = touch(ctx, tx, f.id)
		return err
	})
}

// AppendUID stores a message under uid (mailstore.UIDKeeper): not New.
// It is AppendUIDs of one message: the same checks, errors and flags.
func (f *folder) AppendUID(r io.Reader, size int64, uid uint32, flags string, date time.Time) error {
	return f.AppendUIDs([]mailstore.UIDMessage{{R: r, Size: size, UID: uid, Flags: flags, Date: date}})
}

// Close releases the folder and the maildrop lock it holds.
func (f *folder) Close() error {
	f.mu.Lock()
	unlock, first := f.unlock, !f.closed
	f.unlock, f.closed = nil, true
	f.mu.Unlock()
	if unlock != nil {
		unlock()
	}
	if first {
		f.s.hub.release(f.w)
	}
	return nil
}
