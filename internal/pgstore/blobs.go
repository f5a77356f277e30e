package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Blobs keeps message bodies, one body per message (a copy is a body of
// its own), named by an id the message row keeps. Calls that change
// bodies run inside the store's transaction, so that a body exists exactly
// when its message does; an object store (S3) would write bodies before
// the transaction and remove them after it, under keys recorded in it.
type Blobs interface {
	// Put stores bodies and returns their ids, in order.
	Put(ctx context.Context, tx pgx.Tx, bodies [][]byte) ([]int64, error)
	// Copy stores a copy of each body and returns the copies' ids, in
	// order.
	Copy(ctx context.Context, tx pgx.Tx, ids []int64) ([]int64, error)
	// Get returns a body; errBlobMissing if there is none.
	Get(ctx context.Context, id int64) ([]byte, error)
	// Delete removes bodies; ids without a body are skipped.
	Delete(ctx context.Context, tx pgx.Tx, ids []int64) error
}

var errBlobMissing = errors.New("pgstore: message body missing")

// dbBlobs keeps bodies in the table mail_blobs as bytea: PostgreSQL
// compresses values past about 2 kB and stores them out of line (TOAST),
// so a listing never reads them.
type dbBlobs struct{ pool *pgxpool.Pool }

func (b dbBlobs) Put(ctx context.Context, tx pgx.Tx, bodies [][]byte) ([]int64, error) {
	// The ids are drawn in the order of the input (WITH ORDINALITY), then
	// returned in that order: RETURNING alone promises no order.
	rows, err := tx.Query(ctx, `
WITH t AS (SELECT d, i, nextval('mail_blobs_id_seq') AS id FROM unnest($1::bytea[]) WITH ORDINALITY AS t(d, i)),
     ins AS (INSERT INTO mail_blobs (id, data) SELECT id, d FROM t)
SELECT id FROM t ORDER BY i`, bodies)
	if err != nil {
		return nil, err
	}
	return collectIDs(rows, len(bodies))
}

func (b dbBlobs) Copy(ctx context.Context, tx pgx.Tx, ids []int64) ([]int64, error) {
	rows, err := tx.Query(ctx, `
WITH t AS (SELECT src, i, nextval('mail_blobs_id_seq') AS id FROM unnest($1::bigint[]) WITH ORDINALITY AS t(src, i)),
     ins AS (INSERT INTO mail_blobs (id, data) SELECT t.id, b.data FROM t JOIN mail_blobs b ON b.id = t.src)
SELECT id FROM t ORDER BY i`, ids)
	if err != nil {
		return nil, err
	}
	return collectIDs(rows, len(ids))
}

func collectIDs(rows pgx.Rows, n int) ([]int64, error) {
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err == nil && len(out) != n {
		err = fmt.Errorf("pgstore: %d blob ids for %d bodies", len(out), n)
	}
	return out, err
}

func (b dbBlobs) Get(ctx context.Context, id int64) ([]byte, error) {
	var data []byte
	err := b.pool.QueryRow(ctx, `SELECT data FROM mail_blobs WHERE id = $1`, id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errBlobMissing
	}
	return data, err
}

func (b dbBlobs) Delete(ctx context.Context, tx pgx.Tx, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `DELETE FROM mail_blobs WHERE id = ANY($1)`, ids)
	return err
}
