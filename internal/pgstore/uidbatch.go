package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/mailstore"
)

var _ mailstore.UIDBatcher = (*folder)(nil)

// AppendUIDs stores messages under their UIDs in one transaction
// (mailstore.UIDBatcher): agua migrate's batches, one COMMIT and three
// statements for each instead of per message. Nothing is stored when a UID is refused.
func (f *folder) AppendUIDs(msgs []mailstore.UIDMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	if msgs[0].UID == 0 {
		return fmt.Errorf("%w: 0", mailstore.ErrBadUID)
	}
	bodies := make([][]byte, len(msgs))
	var total int64
	for i, m := range msgs {
		if i > 0 && m.UID <= msgs[i-1].UID {
			return fmt.Errorf("%w: %d after %d", mailstore.ErrBadUID, m.UID, msgs[i-1].UID)
		}
		b, err := readBody(m.R, m.Size)
		if err != nil {
			return err
		}
		bodies[i], total = b, total+m.Size
	}
	now := time.Now()
	return f.change("appending", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE mail_users SET used = used + $2 WHERE usr = $1`, f.user, total); err != nil {
			return err
		}
		var top int64
		err := tx.QueryRow(ctx, `WITH f AS (SELECT id FROM mail_folders WHERE id = $1 FOR UPDATE)
SELECT coalesce((SELECT max(uid) FROM mail_messages WHERE folder = f.id), 0) FROM f`, f.id).Scan(&top)
		if errors.Is(err, pgx.ErrNoRows) {
			return f.gone()
		}
		if err != nil {
			return err
		}
		if int64(msgs[0].UID) <= top {
			return fmt.Errorf("%w: %d, the folder has %d", mailstore.ErrBadUID, msgs[0].UID, top)
		}
		last := int64(msgs[len(msgs)-1].UID)
		if _, err := tx.Exec(ctx, `UPDATE mail_folders SET uidnext = greatest(uidnext, $2) WHERE id = $1`, f.id, last+1); err != nil {
			return err
		}
		if _, err := touch(ctx, tx, f.id); err != nil {
			return err
		}
		blobs, err := f.s.blobs.Put(ctx, tx, bodies)
		if err != nil {
			return err
		}
		uids, sizes := make([]int64, len(msgs)), make([]int64, len(msgs))
		flags, dates := make([]string, len(msgs)), make([]time.Time, len(msgs))
		for i, m := range msgs {
			uids[i], sizes[i], flags[i], dates[i] = int64(m.UID), m.Size, m.Flags, m.Date
			if m.Date.IsZero() {
				dates[i] = now
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO mail_messages (folder, uid, size, flags, internal_date, new, blob)
SELECT $1, u, s, mail_flags('', fl, ''), d, false, b
FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::timestamptz[], $6::bigint[]) AS t(u, s, fl, d, b)`,
			f.id, uids, sizes, flags, dates, blobs)
		return err
	})
}
