package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/mailstore"
)

// lockSpace is the first key of the maildrop advisory locks ("mail"), the
// folder id (its low 32 bits) the second.
const lockSpace = 0x6d61696c

// Lock takes the maildrop lock (RFC 1939 8) on a connection of its own,
// outside the pool, which holds it until unlock or Close; if the node dies,
// the connection ends and PostgreSQL releases the lock, so the maildrop is
// never locked for good by a dead node.
func (f *folder) Lock() (func(), error) {
	ctx, cancel := f.s.op(f.ctx)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, f.s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, dbErr("maildrop lock", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, $2::int4)`, int32(lockSpace), int32(uint32(f.id))).Scan(&got); err != nil || !got {
		closeConn(conn)
		if err != nil {
			return nil, dbErr("maildrop lock", err)
		}
		return nil, fmt.Errorf("%w: %q of %s", mailstore.ErrLocked, f.name, f.user)
	}
	var done bool
	unlock := func() {
		f.mu.Lock()
		first := !done
		if first {
			done, f.unlock = true, nil
		}
		f.mu.Unlock()
		if first {
			closeConn(conn) // ending the session releases the lock
		}
	}
	f.mu.Lock()
	f.unlock = unlock
	f.mu.Unlock()
	return unlock, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Close(ctx)
}
