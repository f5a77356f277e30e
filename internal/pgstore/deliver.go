package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/mailstore"
)

// delivery is one Deliver call waiting for a committer: a body per
// recipient (its Prefix and the message).
type delivery struct {
	rcpts  []mailstore.Recipient
	keys   []string // the recipients' folder names ("" is INBOX)
	bodies [][]byte
	size   int64                 // of all bodies
	err    chan error            // receives the outcome once
	quota  *mailstore.QuotaError // set by the committer: refused, not stored
}

// Deliver stores msg in every recipient's folder and returns once the
// transaction holding it committed (router.MailboxWriter). All or nothing:
// a recipient over quota (*mailstore.QuotaError) and nobody gets it. A
// mailbox listed twice gets two copies: the caller deduplicates. ctx is
// honoured until the delivery is handed to a committer; after that Deliver
// waits for the commit, which is bounded by the store's OpTimeout.
func (s *Store) Deliver(ctx context.Context, msg mailstore.Delivery, rcpts []mailstore.Recipient) error {
	if len(rcpts) == 0 {
		return errors.New("pgstore: no recipients")
	}
	if msg.Size < 0 || msg.R == nil {
		return errors.New("pgstore: invalid message")
	}
	d := &delivery{rcpts: rcpts, keys: make([]string, len(rcpts)), bodies: make([][]byte, len(rcpts)), err: make(chan error, 1)}
	for i, r := range rcpts {
		if err := validUser(r.Mailbox); err != nil || r.Quota <= 0 {
			return fmt.Errorf("pgstore: invalid recipient %q with quota %d", r.Mailbox, r.Quota)
		}
		size := int64(len(r.Prefix)) + msg.Size
		if size > r.Quota {
			return &mailstore.QuotaError{Mailbox: r.Mailbox, Permanent: true}
		}
		if r.Folder != "" {
			k, err := namedFolder(r.Folder)
			if err != nil {
				return err
			}
			d.keys[i] = k
		}
	}
	for i, r := range rcpts {
		if err := ctx.Err(); err != nil {
			return err
		}
		body, err := readBody(io.MultiReader(strings.NewReader(string(r.Prefix)), io.NewSectionReader(msg.R, 0, msg.Size)), int64(len(r.Prefix))+msg.Size)
		if err != nil {
			return err
		}
		d.bodies[i] = body
		d.size += int64(len(body))
	}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case s.queue <- d:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	s.closeMu.RUnlock()
	return <-d.err
}

// committer stores batches until the queue is closed and empty.
func (s *Store) committer() {
	batch := make([]*delivery, 0, s.maxBatch)
	for d := range s.queue {
		batch = append(batch[:0], d)
		size := d.size
		// Take what queued while the previous batch committed, without
		// waiting for more: waiting would only add latency.
	more:
		for len(batch) < s.maxBatch && size < maxBatchBytes {
			select {
			case d, ok := <-s.queue:
				if !ok {
					break more
				}
				batch = append(batch, d)
				size += d.size
			default:
				break more
			}
		}
		err := s.commit(batch)
		for _, d := range batch {
			switch {
			case d.quota != nil:
				d.err <- d.quota
			default:
				d.err <- err
			}
		}
		clear(batch)
	}
}

// target is one folder a batch writes to.
type target struct {
	user, name string
	uids       []int64
	bodies     [][]byte
}

// commit stores a batch in one transaction: it locks the users in order
// (and makes their rows and folders if needed), refuses the deliveries
// their quotas do not allow, takes UIDs per folder, stores the bodies and
// messages and adds the bytes to the usage. A delivery refused for quota
// gets d.quota; every other gets the transaction's outcome.
func (s *Store) commit(batch []*delivery) error {
	var users []string
	for _, d := range batch {
		d.quota = nil
		for _, r := range d.rcpts {
			users = append(users, r.Mailbox)
		}
	}
	slices.Sort(users)
	users = slices.Compact(users)
	var folderIDs []int64
	err := s.inTx(context.Background(), "delivering", func(ctx context.Context, tx pgx.Tx) error {
		// From scratch: inTx runs this again after a deadlock.
		folderIDs = folderIDs[:0]
		for _, d := range batch {
			d.quota = nil
		}
		// Lock every user of the batch, in order: two batches on two nodes
		// wait for each other rather than deadlock.
		rows, err := tx.Query(ctx, `INSERT INTO mail_users (usr) SELECT u FROM unnest($1::text[]) AS u ORDER BY u
ON CONFLICT (usr) DO UPDATE SET usr = EXCLUDED.usr RETURNING usr, used`, users)
		if err != nil {
			return err
		}
		used := map[string]int64{}
		var u string
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&u, &n}, func() error { used[u] = n; return nil }); err != nil {
			return err
		}
		// Quotas, in the order of the batch; then the folders' messages.
		targets := map[[2]string]*target{}
		var order []*target
		adds := map[string]int64{}
	deliveries:
		for _, d := range batch {
			add := map[string]int64{}
			for i, r := range d.rcpts {
				add[r.Mailbox] += int64(len(d.bodies[i]))
				if used[r.Mailbox]+adds[r.Mailbox]+add[r.Mailbox] > r.Quota {
					d.quota = &mailstore.QuotaError{Mailbox: r.Mailbox}
					continue deliveries
				}
			}
			for m, b := range add {
				adds[m] += b
			}
			for i, r := range d.rcpts {
				k := [2]string{r.Mailbox, d.keys[i]}
				t := targets[k]
				if t == nil {
					t = &target{user: r.Mailbox, name: d.keys[i]}
					targets[k] = t
					order = append(order, t)
				}
				t.bodies = append(t.bodies, d.bodies[i])
			}
		}
		if len(order) == 0 {
			return nil
		}
		tu, tn, counts := make([]string, len(order)), make([]string, len(order)), make([]int64, len(order))
		for i, t := range order {
			tu[i], tn[i], counts[i] = t.user, t.name, int64(len(t.bodies))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO mail_folders (usr, name)
SELECT u, n FROM unnest($1::text[], $2::text[]) AS t(u, n)
WHERE NOT EXISTS (SELECT 1 FROM mail_folders f WHERE f.usr = t.u AND f.name = t.n)
ON CONFLICT DO NOTHING`, tu, tn); err != nil {
			return err
		}
		// UIDs: each folder's UIDNEXT goes up by its count, in this
		// transaction, and the listeners hear of it at commit.
		rows, err = tx.Query(ctx, `WITH f AS (
	UPDATE mail_folders f SET uidnext = f.uidnext + t.n, modseq = f.modseq + 1
	FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(u, nm, n)
	WHERE f.usr = t.u AND f.name = t.nm
	RETURNING f.id, f.usr, f.name, f.uidnext - t.n AS first)
SELECT id, usr, name, first FROM f, pg_notify('`+notifyChannel+`', f.id::text)`, tu, tn, counts)
		if err != nil {
			return err
		}
		var uids, sizes []int64
		var bodies [][]byte
		var id, first int64
		var name string
		if _, err := pgx.ForEachRow(rows, []any{&id, &u, &name, &first}, func() error {
			t := targets[[2]string{u, name}]
			if t == nil || t.uids != nil {
				return fmt.Errorf("pgstore: unexpected folder %q of %s", name, u)
			}
			for i, b := range t.bodies {
				t.uids = append(t.uids, first+int64(i))
				folderIDs, uids, sizes = append(folderIDs, id), append(uids, first+int64(i)), append(sizes, int64(len(b)))
				bodies = append(bodies, b)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, t := range order {
			if t.uids == nil {
				return fmt.Errorf("pgstore: folder %q of %s vanished during delivery", t.name, t.user)
			}
		}
		blobs, err := s.blobs.Put(ctx, tx, bodies)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO mail_messages (folder, uid, size, internal_date, new, blob)
SELECT f, u, s, now(), true, b FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS t(f, u, s, b)`,
			folderIDs, uids, sizes, blobs); err != nil {
			return err
		}
		au, ab := make([]string, 0, len(adds)), make([]int64, 0, len(adds))
		for m, b := range adds {
			au, ab = append(au, m), append(ab, b)
		}
		_, err = tx.Exec(ctx, `UPDATE mail_users u SET used = u.used + t.b FROM unnest($1::text[], $2::bigint[]) AS t(usr, b) WHERE u.usr = t.usr`, au, ab)
		return err
	})
	if err == nil {
		s.hub.changed(folderIDs...)
		s.batches.Add(1)
		s.committed.Add(int64(len(batch)))
	}
	return err
}
