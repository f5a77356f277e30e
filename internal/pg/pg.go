// Package pg is agua's access to PostgreSQL (issue 17): one connection pool
// per node shared by every part kept there (the accounts directory, the
// mail store, the outbound queue), versioned schema migrations that each
// part brings, and the classification of failures into "PostgreSQL is
// unavailable, try again later" (ErrUnavailable) and everything else.
//
// The parts own their schemas: each exports its []Migration, tagged with
// its component name, and Migrate applies whatever a database lacks under
// an advisory lock, so that several nodes starting together migrate once.
package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrUnavailable marks a failure that says nothing about the request and
// everything about the database: it is down, restarting, unreachable, out
// of connections, or it ended the transaction to resolve a conflict. A
// mail service answers it with a temporary error (SMTP 4xx, POP3
// -ERR [SYS/TEMP], IMAP NO [UNAVAILABLE]) and never acknowledges what it
// could not store. Match with errors.Is; Classify wraps errors in it.
var ErrUnavailable = errors.New("postgresql unavailable")

// Options tune a pool.
type Options struct {
	MaxConns int // most connections; 0 means 16
	// ConnectTimeout bounds one connection attempt; 0 means 5 s, so that a
	// node cut off from the database answers "try later" promptly.
	ConnectTimeout time.Duration
}

// Open opens a pool to the database at url and checks that it answers.
// The pool reconnects by itself: a database restart costs the requests
// running at that moment (ErrUnavailable), not the node.
func Open(ctx context.Context, url string, o Options) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	cfg.MaxConns = int32(o.MaxConns)
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	// A connection that sat idle through a database restart is found dead
	// by the health check rather than by a client's request.
	cfg.HealthCheckPeriod = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, Classify(err)
	}
	pctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres %s: %w", cfg.ConnConfig.Host, Classify(err))
	}
	return pool, nil
}

// Classify returns err wrapped in ErrUnavailable when it comes from the
// database being unreachable or unable to serve right now, and err itself
// otherwise (nil stays nil).
func Classify(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if Unavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// Unavailable says whether err is a failure of the database rather than
// of the request: see ErrUnavailable.
func Unavailable(err error) bool {
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources (too many connections, disk full)
			"57", // operator intervention: shutdown, crash recovery, cannot connect now
			"58", // system error (I/O)
			"40": // transaction rollback: serialization failure, deadlock — retry
			return true
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	// A connection lost in the middle of a query surfaces as an
	// unexpected EOF or a closed-connection error without a PgError.
	return errors.Is(err, context.DeadlineExceeded) || isConnClosed(err)
}

func isConnClosed(err error) bool {
	msg := err.Error()
	for _, s := range []string{"conn closed", "unexpected EOF", "connection reset", "broken pipe", "failed to connect", "closed pool"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
