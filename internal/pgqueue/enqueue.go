package pgqueue

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/queue"
)

// message is an enqueue waiting for its transaction.
type message struct {
	id   string
	env  queue.Envelope
	body []byte
}

// commit is one writer's request to the committer.
type commit struct {
	m   *message
	err chan error
}

// Begin implements queue.Queue: the message is read into memory; Commit
// writes it in the next group transaction.
func (q *Queue) Begin(ctx context.Context, env queue.Envelope, body io.Reader) (queue.Tx, error) {
	if len(env.To) == 0 {
		return nil, fmt.Errorf("pgqueue: no recipients")
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, queue.ErrClosed
	}
	q.writers.Add(1)
	q.mu.Unlock()
	b, err := io.ReadAll(body)
	if err != nil {
		q.writers.Done()
		return nil, fmt.Errorf("pgqueue: reading the message: %w", err)
	}
	if env.Received.IsZero() {
		env.Received = q.now()
	}
	return &tx{q: q, m: &message{id: queue.NewID(q.now()), env: env, body: b}}, nil
}

// Enqueue implements queue.Queue.
func (q *Queue) Enqueue(ctx context.Context, env queue.Envelope, body io.Reader) (string, error) {
	t, err := q.Begin(ctx, env, body)
	if err != nil {
		return "", err
	}
	return t.Commit(ctx)
}

type tx struct {
	q    *Queue
	m    *message
	done bool
}

// Commit implements queue.Tx: it returns once the transaction holding the
// message has committed.
func (t *tx) Commit(ctx context.Context) (string, error) {
	if t.done {
		return "", fmt.Errorf("pgqueue: transaction already ended")
	}
	t.done = true
	defer t.q.writers.Done()
	c := &commit{m: t.m, err: make(chan error, 1)}
	select {
	case t.q.commits <- c:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	// Once handed over the transaction runs whatever the caller does; its
	// outcome is the answer (the committer's own deadline bounds it).
	if err := <-c.err; err != nil {
		return "", err
	}
	t.q.signal()
	return t.m.id, nil
}

// Abort implements queue.Tx.
func (t *tx) Abort() {
	if !t.done {
		t.done = true
		t.m = nil
		t.q.writers.Done()
	}
}

// committer writes enqueues in group transactions until commits is closed:
// it takes whatever queued while the previous transaction ran, without
// waiting for more.
func (q *Queue) committer() {
	defer close(q.stopped)
	queue.Batches(q.commits, q.opts.MaxBatch, q.flush)
}

// flush writes the batch in one transaction. If that fails for a reason
// other than the database being unavailable, one message may be at fault
// (its own constraint): each is then tried alone, so the others are not
// refused with it.
func (q *Queue) flush(batch []*commit) {
	err := q.insert(batch)
	if err != nil && len(batch) > 1 && !errors.Is(err, pg.ErrUnavailable) {
		for _, c := range batch {
			c.err <- q.insert([]*commit{c})
		}
		return
	}
	for _, c := range batch {
		c.err <- err
	}
}

func (q *Queue) insert(batch []*commit) error {
	ctx, cancel := q.op(context.Background())
	defer cancel()
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, c := range batch {
			m := c.m
			b.Queue(`INSERT INTO queue_message (id, sender, smtputf8, eightbit, account, received, size) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				m.id, m.env.From, m.env.UTF8, m.env.EightBit, m.env.Account, m.env.Received, int64(len(m.body)))
			b.Queue(`INSERT INTO queue_body (message, data) VALUES ($1, $2)`, m.id, m.body)
			b.Queue(`INSERT INTO queue_rcpt (message, idx, addr, next_at) SELECT $1, i - 1, a, $3 FROM unnest($2::text[]) WITH ORDINALITY AS t(a, i)`, m.id, m.env.To, m.env.Received)
		}
		b.Queue(`SELECT pg_notify('` + notifyChannel + `', '')`)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fail("enqueue", err)
	}
	return nil
}
