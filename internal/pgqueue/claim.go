package pgqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/queue"
)

// due is the condition on a recipient row r that Claim takes: not final
// and its time has come ($1 is now; a pending recipient's time is its
// arrival), and claimed by no one whose lease still runs.
const due = `r.status < 2 AND r.next_at <= $1 AND (r.claimed_until IS NULL OR r.claimed_until < $1)`

// Claim implements queue.Queue. Messages are locked with SKIP LOCKED, so
// nodes claiming at the same moment take different messages; the UPDATE
// that marks the recipients claimed re-checks that they are free, so a
// recipient another node claimed meanwhile is never taken twice.
func (q *Queue) Claim(now time.Time, max int) ([]queue.Job, error) {
	if q.isClosed() {
		return nil, queue.ErrClosed
	}
	if max <= 0 {
		return nil, nil
	}
	ctx, cancel := q.op(context.Background())
	defer cancel()
	var (
		jobs    []queue.Job
		claimed map[string][]indexed
	)
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT m.id, m.sender, m.smtputf8, m.eightbit, m.account, m.received, m.size, m.delay_notified
			FROM queue_message m
			WHERE NOT m.held AND m.id IN (SELECT r.message FROM queue_rcpt r WHERE `+due+`)
			ORDER BY m.received, m.id LIMIT $2
			FOR UPDATE OF m SKIP LOCKED`, now, max)
		if err != nil {
			return err
		}
		jobs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (queue.Job, error) {
			var j queue.Job
			err := r.Scan(&j.ID, &j.Envelope.From, &j.Envelope.UTF8, &j.Envelope.EightBit, &j.Envelope.Account, &j.Envelope.Received, &j.Size, &j.DelayNotified)
			return j, err
		})
		if err != nil || len(jobs) == 0 {
			return err
		}
		ids := make([]string, len(jobs))
		for i, j := range jobs {
			ids[i] = j.ID
		}
		rows, err = tx.Query(ctx, `UPDATE queue_rcpt r SET claimed_by = $3, claimed_until = $4
			WHERE r.message = ANY($2) AND `+due+`
			RETURNING r.message, `+rcptColumns, now, ids, q.node, now.Add(q.opts.Lease))
		if err != nil {
			return err
		}
		if claimed, err = collectRcpts(rows); err != nil {
			return err
		}
		to, err := envelopeTo(ctx, tx, ids)
		if err != nil {
			return err
		}
		for i := range jobs {
			jobs[i].Envelope.To = to[jobs[i].ID]
			rs := claimed[jobs[i].ID]
			slices.SortFunc(rs, func(a, b indexed) int { return a.idx - b.idx })
			for _, r := range rs {
				jobs[i].Rcpts = append(jobs[i].Rcpts, r.Recipient)
			}
		}
		// A message whose due recipients another node claimed between
		// the two statements yields no job.
		jobs = slices.DeleteFunc(jobs, func(j queue.Job) bool { return len(j.Rcpts) == 0 })
		return nil
	})
	if err != nil {
		// Claims whose COMMIT went through unanswered lapse with their
		// lease: they are not renewed.
		return nil, fail("claim", err)
	}
	q.hold(claimed)
	return jobs, nil
}

// rcptColumns are the columns collectRcpts reads, after the message id.
const rcptColumns = `r.idx, r.addr, r.status, r.attempts, r.next_at, r.reply, r.updated`

// indexed is a recipient with its place in the envelope.
type indexed struct {
	idx int
	queue.Recipient
}

// collectRcpts reads rows of (message, rcptColumns) by message.
func collectRcpts(rows pgx.Rows) (map[string][]indexed, error) {
	out := map[string][]indexed{}
	var (
		id            string
		r             indexed
		status        int16
		next, updated pgtype.Timestamptz
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &r.idx, &r.Addr, &status, &r.Attempts, &next, &r.Reply, &updated}, func() error {
		r.Status = queue.Status(status)
		r.Next, r.Updated = timeOf(next), timeOf(updated)
		if r.Status != queue.Deferred {
			r.Next = time.Time{} // only a deferred recipient has a next attempt
		}
		out[id] = append(out[id], r)
		return nil
	})
	return out, err
}

func timeOf(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time
}

// envelopeTo returns the envelope recipients of messages, in order.
func envelopeTo(ctx context.Context, tx pgx.Tx, ids []string) (map[string][]string, error) {
	rows, err := tx.Query(ctx, `SELECT message, addr FROM queue_rcpt WHERE message = ANY($1) ORDER BY message, idx`, ids)
	if err != nil {
		return nil, err
	}
	to := map[string][]string{}
	var id, addr string
	_, err = pgx.ForEachRow(rows, []any{&id, &addr}, func() error {
		to[id] = append(to[id], addr)
		return nil
	})
	return to, err
}

// hold records claims this node made, for the lease renewal.
func (q *Queue) hold(claimed map[string][]indexed) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, rs := range claimed {
		if q.held[id] == nil {
			q.held[id] = map[string]int{}
		}
		for _, r := range rs {
			q.held[id][r.Addr]++
		}
	}
}

// forget drops this node's claims on addrs of id: their delivery ended,
// whether or not its outcome could be recorded (if not, the lease lapses
// and the recipients are tried again).
func (q *Queue) forget(id string, addrs []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.held[id]
	for _, a := range addrs {
		if h[a] > 1 {
			h[a]--
		} else {
			delete(h, a)
		}
	}
	if len(h) == 0 {
		delete(q.held, id)
	}
}

// Update implements queue.Queue. Results for recipients this node no
// longer holds (its lease ran out and another node took them over, or it
// never claimed them) are not recorded: the error is queue.ErrNotClaimed,
// after the others were. When the database cannot be reached the results
// are kept, with the claims, and recorded once it answers again (so a
// delivery made during an outage is not made again after it); the error
// says so.
func (q *Queue) Update(ctx context.Context, id string, results []queue.Result) error {
	if !queue.ValidID(id) {
		return queue.ErrBadID
	}
	u := update{id: id, results: results, now: q.now()}
	err := q.record(ctx, u)
	if errors.Is(err, pg.ErrUnavailable) && q.later(u) {
		return fmt.Errorf("%w (results kept, recorded when the database answers)", err)
	}
	q.forget(id, u.addrs())
	return err
}

// update is the outcome of one delivery, as Update got it.
type update struct {
	id      string
	results []queue.Result
	now     time.Time
}

func (u update) addrs() []string {
	a := make([]string, len(u.results))
	for i, r := range u.results {
		a[i] = r.Rcpt
	}
	return a
}

// maxLater bounds the outcomes kept while the database is unreachable;
// beyond it, an outcome is dropped and its recipients are tried again once
// their lease lapses.
const maxLater = 10000

// later keeps u for recordLater, unless the queue is closing or full.
func (q *Queue) later(u update) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.pending) >= maxLater {
		return false
	}
	q.pending = append(q.pending, u)
	return true
}

// recordLater records the outcomes kept while the database was
// unreachable, in order, until it fails again.
func (q *Queue) recordLater() {
	q.mu.Lock()
	ps := q.pending
	q.pending = nil
	q.mu.Unlock()
	for i, u := range ps {
		err := q.record(context.Background(), u)
		if errors.Is(err, pg.ErrUnavailable) {
			q.mu.Lock()
			q.pending = append(ps[i:], q.pending...)
			q.mu.Unlock()
			return
		}
		q.forget(u.id, u.addrs())
		if err != nil && !errors.Is(err, queue.ErrNotFound) {
			q.log.Warn("pgqueue: recording delivery results kept during an outage", "id", u.id, "err", err)
		}
	}
}

// record writes u in one transaction.
func (q *Queue) record(ctx context.Context, u update) error {
	id, results, now := u.id, u.results, u.now
	ctx, cancel := q.op(ctx)
	defer cancel()
	var (
		notClaimed []string
		found      bool
	)
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		notClaimed, found = nil, false
		// The message row first, as Claim and the operator's changes lock
		// it: one lock order, no deadlock.
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM queue_message WHERE id = $1 FOR UPDATE`, id).Scan(&one); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // deleted meanwhile (by the operator): nothing to record
			}
			return err
		}
		rows, err := tx.Query(ctx, `SELECT idx, addr, coalesce(claimed_by, '') FROM queue_rcpt WHERE message = $1 ORDER BY idx FOR UPDATE`, id)
		if err != nil {
			return err
		}
		type row struct {
			idx      int
			addr, by string
			used     bool
		}
		var rs []row
		var r row
		if _, err := pgx.ForEachRow(rows, []any{&r.idx, &r.addr, &r.by}, func() error {
			rs = append(rs, r)
			return nil
		}); err != nil {
			return err
		}
		if len(rs) == 0 {
			return nil // deleted meanwhile (by the operator): nothing to record
		}
		found = true
		b := &pgx.Batch{}
		delayed, deferred := false, false
		for _, res := range results {
			i := slices.IndexFunc(rs, func(r row) bool { return r.addr == res.Rcpt && r.by == q.node && !r.used })
			if i < 0 {
				notClaimed = append(notClaimed, res.Rcpt)
				continue
			}
			rs[i].used = true
			next := now // a final recipient's next_at is never read
			if res.Status == queue.Deferred {
				next, deferred = res.Next, true
				if next.IsZero() {
					next = now
				}
			}
			b.Queue(`UPDATE queue_rcpt SET status = $3, reply = $4, next_at = $5, updated = $6, attempts = attempts + 1,
				claimed_by = NULL, claimed_until = NULL WHERE message = $1 AND idx = $2`,
				id, rs[i].idx, int16(res.Status), res.Reply, next, now)
			delayed = delayed || res.DelayNotified
		}
		if delayed {
			b.Queue(`UPDATE queue_message SET delay_notified = true WHERE id = $1`, id)
		}
		// A message whose recipients are all final is done.
		b.Queue(`DELETE FROM queue_message WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM queue_rcpt WHERE message = $1 AND status < 2)`, id)
		if deferred {
			b.Queue(`SELECT pg_notify('` + notifyChannel + `', '')`)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fail("recording delivery results", err)
	}
	if !found {
		return queue.ErrNotFound
	}
	q.signal() // a deferred recipient may be due at once
	if len(notClaimed) > 0 {
		return fmt.Errorf("%w: %v in %s", queue.ErrNotClaimed, notClaimed, id)
	}
	return nil
}

// Unclaim implements queue.Queue.
func (q *Queue) Unclaim(id string, rcpts []string) {
	ctx, cancel := q.op(context.Background())
	defer cancel()
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE queue_rcpt SET claimed_by = NULL, claimed_until = NULL
			WHERE message = $1 AND claimed_by = $2 AND addr = ANY($3)`, id, q.node, rcpts); err != nil {
			return err
		}
		return notify(ctx, tx)
	})
	q.forget(id, rcpts)
	if err != nil {
		// The lease lapses instead.
		q.log.Warn("pgqueue: giving back claims", "id", id, "err", err)
	}
	q.signal()
}

// renew extends the leases of the claims this node holds, every Lease/3,
// and records outcomes kept during an outage, every Poll, until Close. A claim whose lease already ran out is not renewed: another
// node may have it now.
func (q *Queue) renew() {
	defer q.bg.Done()
	t := time.NewTicker(q.opts.Lease / 3)
	defer t.Stop()
	retry := time.NewTicker(q.opts.Poll)
	defer retry.Stop()
	for {
		select {
		case <-q.ctx.Done():
			return
		case <-retry.C:
			q.recordLater()
			continue
		case <-t.C:
		}
		q.mu.Lock()
		ids := make([]string, 0, len(q.held))
		for id := range q.held {
			ids = append(ids, id)
		}
		q.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		now := q.now()
		ctx, cancel := q.op(q.ctx)
		_, err := q.pool.Exec(ctx, `UPDATE queue_rcpt SET claimed_until = $4
			WHERE message = ANY($1) AND claimed_by = $2 AND claimed_until >= $3`, ids, q.node, now, now.Add(q.opts.Lease))
		cancel()
		if err != nil {
			q.log.Warn("pgqueue: renewing claims", "messages", len(ids), "err", err)
		}
	}
}

func (q *Queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}
