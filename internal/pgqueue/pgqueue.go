// Package pgqueue is the outbound queue on PostgreSQL (issue 17): a
// queue.Queue that several agua nodes share, so that mail queued by a node
// that dies is delivered by the others.
//
// A message is three tables (schema.go): its envelope and flags, its
// bytes, and one row per recipient with the recipient's state and claim.
// Enqueue returns once the message's transaction has committed (the SMTP
// server's 250 after DATA, RFC 5321 6.1, comes after COMMIT); concurrent
// enqueues share one transaction (group commit). A database that cannot
// be reached fails the enqueue with pg.ErrUnavailable, which the SMTP
// server answers 451.
//
// Claims: Claim locks due messages with SELECT … FOR UPDATE SKIP LOCKED,
// so nodes claiming at once take different messages, and marks their due
// recipients claimed by this node until a lease ends. The node renews the
// lease of what it holds while the delivery runs; a node that dies stops
// renewing, and once the lease has run out any node claims the recipients
// again. Exactly one node holds a recipient at a time; Update records only
// the results of recipients this node still holds.
//
// Wake-ups cross nodes with LISTEN/NOTIFY: every change that makes mail due
// (an enqueue, a deferral, a retry, a release, an unclaim) notifies channel
// agua_queue in its transaction, and each node listens on a connection of
// its own; while that connection is down the node wakes its engine every
// Options.Poll instead.
//
// Delivery is at least once, as with the file queue. A duplicate can come
// from (1) the time between the remote server's 250 after DATA and the
// COMMIT of Update (a node killed in between, or the database unreachable
// then: the claim lapses and another node sends again), and (2) a node cut
// off from the database for longer than the lease while a delivery runs:
// another node takes the recipients over and both send. An enqueue whose
// COMMIT was sent but whose answer was lost is answered 451 although it may
// have committed; the client's retry is then a second copy.
package pgqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/queue"
)

// Options configure a queue.
type Options struct {
	// Node names this node in claims (claimed_by); a random suffix is
	// added so that two queues on one host never share a name. Default:
	// the host name.
	Node string
	// Lease is how long a claim lasts without renewal: how long the mail
	// of a node that died waits before another node delivers it. It is
	// renewed every Lease/3 while the delivery runs. Default 2 minutes.
	Lease time.Duration
	// Poll is how often the engine is woken while the LISTEN connection is
	// down (and how soon it is tried again). Default 2 s.
	Poll time.Duration
	// Timeout bounds each database operation. Default 30 s.
	Timeout time.Duration
	// MaxBatch is the most enqueues one transaction carries. Default 256.
	MaxBatch int
	// Logger receives listener and renewal failures; nil discards.
	Logger *slog.Logger
	// Now is the clock of queue state and leases (tests); time.Now if nil.
	// Nodes' clocks must agree (NTP) to well within the lease.
	Now func() time.Time
}

// Defaults.
const (
	DefaultLease    = 2 * time.Minute
	DefaultPoll     = 2 * time.Second
	DefaultTimeout  = 30 * time.Second
	DefaultMaxBatch = 256
	// notifyChannel is the LISTEN/NOTIFY channel of queue changes.
	notifyChannel = "agua_queue"
)

// Queue is the outbound queue on PostgreSQL. It implements queue.Queue.
type Queue struct {
	pool *pgxpool.Pool
	opts Options
	node string
	log  *slog.Logger
	now  func() time.Time

	wake    chan struct{}
	commits chan *commit
	ctx     context.Context // ends at Close: stops the listener and renewer
	cancel  context.CancelFunc
	bg      sync.WaitGroup // listener, renewer

	mu      sync.Mutex
	closed  bool
	writers sync.WaitGroup            // enqueues between Begin and the end of Commit
	held    map[string]map[string]int // claims this node holds: message → address → count
	pending []update                  // outcomes kept while the database was unreachable
	stopped chan struct{}             // closed when the committer has ended
}

var _ queue.Queue = (*Queue)(nil)

// New returns the queue in the database of pool (whose migrations the
// caller applied: Migrations). The pool stays the caller's: Close does not
// close it.
func New(pool *pgxpool.Pool, o Options) (*Queue, error) {
	if pool == nil {
		return nil, errors.New("pgqueue: no database")
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	var rb [4]byte
	rand.Read(rb[:])
	q := &Queue{
		pool: pool, opts: o, node: o.Node + "/" + hex.EncodeToString(rb[:]),
		log: o.Logger, now: o.Now,
		wake:    make(chan struct{}, 1),
		commits: make(chan *commit, o.MaxBatch),
		held:    map[string]map[string]int{},
		stopped: make(chan struct{}),
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	if q.now == nil {
		q.now = time.Now
	}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	go q.committer()
	q.bg.Add(2)
	go q.listen()
	go q.renew()
	q.signal() // mail may be waiting from before this node started
	return q, nil
}

// Node is the name this queue claims under.
func (q *Queue) Node() string { return q.node }

// op returns a context for one database operation.
func (q *Queue) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, q.opts.Timeout)
}

// fail wraps a database error for the caller: unavailability is marked
// (pg.ErrUnavailable: answer "try again later").
func fail(what string, err error) error {
	return fmt.Errorf("pgqueue: %s: %w", what, pg.Classify(err))
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Wake implements queue.Queue: it fires on this node's changes, on
// notifications from the other nodes, and every Poll while the listener is
// down.
func (q *Queue) Wake() <-chan struct{} { return q.wake }

// notify tells every node's engine (this one's included) that mail may be
// due, when tx commits.
func notify(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', '')`)
	return err
}

// listen keeps a connection of its own LISTENing on notifyChannel and wakes
// the engine on each notification; while it cannot, it wakes the engine
// every Poll (the fallback polling) and tries again.
func (q *Queue) listen() {
	defer q.bg.Done()
	for q.ctx.Err() == nil {
		err := q.listenOnce()
		if q.ctx.Err() != nil {
			return
		}
		q.log.Debug("pgqueue: LISTEN connection down; polling", "err", err, "every", q.opts.Poll)
		q.signal()
		select {
		case <-q.ctx.Done():
			return
		case <-time.After(q.opts.Poll):
		}
	}
}

func (q *Queue) listenOnce() error {
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.Timeout)
	conn, err := pgx.ConnectConfig(ctx, q.pool.Config().ConnConfig.Copy())
	if err == nil {
		_, err = conn.Exec(ctx, "LISTEN "+notifyChannel)
	}
	cancel()
	if err != nil {
		if conn != nil {
			conn.Close(context.Background())
		}
		return err
	}
	defer conn.Close(context.Background())
	// Notifications sent while no one listened are lost: look once.
	q.signal()
	for {
		// A quiet connection is checked now and then, so that a database
		// gone away is noticed (and polling starts) within a Poll or so.
		wctx, cancel := context.WithTimeout(q.ctx, 10*q.opts.Poll)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			q.signal()
		case q.ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded):
			pctx, cancel := context.WithTimeout(q.ctx, q.opts.Timeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
		default:
			return err
		}
	}
}

// Close stops the listener and the lease renewal, waits for enqueues in
// progress and gives back the claims this node holds, so that other nodes
// need not wait for their leases. The pool stays open.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	q.writers.Wait()
	close(q.commits)
	<-q.stopped
	q.cancel()
	q.bg.Wait()
	q.recordLater() // a last try; what is left is tried again by a node once its lease lapses
	ctx, cancel := q.op(context.Background())
	defer cancel()
	tag, err := q.pool.Exec(ctx, `UPDATE queue_rcpt SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1`, q.node)
	if err != nil {
		return fail("giving back claims", err)
	}
	if tag.RowsAffected() > 0 {
		q.pool.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', '')`)
	}
	return nil
}
