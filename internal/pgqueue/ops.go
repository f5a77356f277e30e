package pgqueue

import (
	"bytes"
	"context"
	"errors"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/queue"
)

// Open implements queue.Queue.
func (q *Queue) Open(id string) (io.ReadCloser, error) {
	if !queue.ValidID(id) {
		return nil, queue.ErrBadID
	}
	ctx, cancel := q.op(context.Background())
	defer cancel()
	var b []byte
	err := q.pool.QueryRow(ctx, `SELECT data FROM queue_body WHERE message = $1`, id).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, queue.ErrNotFound
	}
	if err != nil {
		return nil, fail("reading "+id, err)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// messageColumns are the columns scanMessage reads.
const messageColumns = `m.id, m.sender, m.smtputf8, m.eightbit, m.account, m.received, m.size, m.held, m.delay_notified`

func scanMessage(row pgx.CollectableRow) (queue.Message, error) {
	var m queue.Message
	err := row.Scan(&m.ID, &m.Envelope.From, &m.Envelope.UTF8, &m.Envelope.EightBit, &m.Envelope.Account,
		&m.Envelope.Received, &m.Size, &m.Held, &m.DelayNotified)
	return m, err
}

// List implements queue.Queue: every message, oldest first.
func (q *Queue) List() ([]queue.Message, error) {
	return q.list(`TRUE`)
}

// list returns the messages matching where (over m, with $1 as its
// argument if any), oldest first, with their recipients, as of one
// snapshot.
func (q *Queue) list(where string, args ...any) ([]queue.Message, error) {
	ctx, cancel := q.op(context.Background())
	defer cancel()
	var out []queue.Message
	err := pgx.BeginTxFunc(ctx, q.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+messageColumns+` FROM queue_message m WHERE `+where+` ORDER BY m.received, m.id`, args...)
		if err != nil {
			return err
		}
		if out, err = pgx.CollectRows(rows, scanMessage); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT r.message, `+rcptColumns+` FROM queue_rcpt r JOIN queue_message m ON m.id = r.message
			WHERE `+where+` ORDER BY r.message, r.idx`, args...)
		if err != nil {
			return err
		}
		rcpts, err := collectRcpts(rows)
		if err != nil {
			return err
		}
		for i := range out {
			m := &out[i]
			m.Rcpts = make([]queue.Recipient, 0, len(rcpts[m.ID]))
			for _, r := range rcpts[m.ID] {
				m.Rcpts = append(m.Rcpts, r.Recipient)
				m.Envelope.To = append(m.Envelope.To, r.Addr)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fail("listing", err)
	}
	return out, nil
}

// Get implements queue.Queue.
func (q *Queue) Get(id string) (queue.Message, error) {
	if !queue.ValidID(id) {
		return queue.Message{}, queue.ErrBadID
	}
	l, err := q.list(`m.id = $1`, id)
	if err != nil {
		return queue.Message{}, err
	}
	if len(l) == 0 {
		return queue.Message{}, queue.ErrNotFound
	}
	return l[0], nil
}

// Hold implements queue.Queue.
func (q *Queue) Hold(id string) error {
	return q.change(id, `UPDATE queue_message SET held = true WHERE id = $1`, false)
}

// Release implements queue.Queue.
func (q *Queue) Release(id string) error {
	return q.change(id, `UPDATE queue_message SET held = false WHERE id = $1`, true)
}

// Retry implements queue.Queue.
func (q *Queue) Retry(id string, now time.Time) error {
	return q.change(id, `WITH m AS (SELECT id FROM queue_message WHERE id = $1)
		UPDATE queue_rcpt SET next_at = $2 FROM m
		WHERE message = m.id AND status = 1 AND next_at > $2`, true, now)
}

// Delete implements queue.Queue: the message and its recipients go at
// once; a delivery in progress reports to nothing (Update: ErrNotFound).
func (q *Queue) Delete(id string) error {
	return q.change(id, `DELETE FROM queue_message WHERE id = $1`, false)
}

// change runs an operator's statement on message id (its $1) in a
// transaction that first checks that the message exists, and notifies the
// nodes when due says the change may make mail due.
func (q *Queue) change(id, stmt string, due bool, args ...any) error {
	if !queue.ValidID(id) {
		return queue.ErrBadID
	}
	if q.isClosed() {
		return queue.ErrClosed
	}
	ctx, cancel := q.op(context.Background())
	defer cancel()
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM queue_message WHERE id = $1 FOR UPDATE`, id).Scan(&one); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, stmt, append([]any{id}, args...)...); err != nil {
			return err
		}
		if due {
			return notify(ctx, tx)
		}
		return nil
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return queue.ErrNotFound
	}
	if err != nil {
		return fail(id, err)
	}
	if due {
		q.signal()
	}
	return nil
}

// Stats implements queue.Queue. The interface has no error: a database
// that does not answer gives empty figures, and the failure is logged.
func (q *Queue) Stats() queue.Stats {
	st, err := q.stats()
	if err != nil {
		q.log.Warn("pgqueue: stats", "err", err)
		return queue.Stats{ByDomain: map[string]int{}}
	}
	return st
}

// Figures is Stats with the database's failure returned (agua queue stats).
func (q *Queue) Figures() (queue.Stats, error) { return q.stats() }

func (q *Queue) stats() (queue.Stats, error) {
	ctx, cancel := q.op(context.Background())
	defer cancel()
	st := queue.Stats{ByDomain: map[string]int{}}
	err := pgx.BeginTxFunc(ctx, q.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var oldest *time.Time
		if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE held), coalesce(sum(size), 0), min(received) FROM queue_message`).
			Scan(&st.Messages, &st.Held, &st.Bytes, &oldest); err != nil {
			return err
		}
		if oldest != nil {
			st.Oldest = *oldest
		}
		// The domain is what follows the first @, lower-cased (as the
		// file queue counts).
		rows, err := tx.Query(ctx, `SELECT lower(CASE WHEN strpos(addr, '@') > 0 THEN substr(addr, strpos(addr, '@') + 1) ELSE '' END) AS domain,
			count(*), count(*) FILTER (WHERE status = 1)
			FROM queue_rcpt WHERE status < 2 GROUP BY domain`)
		if err != nil {
			return err
		}
		var dom string
		var n, deferred int
		_, err = pgx.ForEachRow(rows, []any{&dom, &n, &deferred}, func() error {
			st.ByDomain[dom] += n
			st.Recipients += n
			st.Deferred += deferred
			return nil
		})
		return err
	})
	if err != nil {
		return st, fail("stats", err)
	}
	return st, nil
}
