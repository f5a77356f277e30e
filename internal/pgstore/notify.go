package pgstore

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/mailstore"
)

// notifyChannel is the channel every change of a folder is announced on,
// with the folder id as payload, at commit.
const notifyChannel = "agua_mail"

const (
	// listenCheck is how long the listener waits for a notification
	// before it checks that its connection still answers (a peer that
	// vanished without closing the connection).
	listenCheck = 30 * time.Second
	// listenRetryMax bounds the wait between connection attempts.
	listenRetryMax = 5 * time.Second
)

// hub is the process's change listener: one LISTEN connection that marks
// the open folders changed, so that Stamp is answered from memory.
type hub struct {
	s      *Store
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	up      bool // listening: a change of any folder will reach us
	folders map[int64]*watch
}

// watch is what the hub knows of one folder open in this process.
type watch struct {
	id   int64
	refs int
	gen  uint64 // raised by every notification for the folder

	// The folder's row as read at generation knownGen, valid while
	// known && knownGen == gen && the hub is up.
	known    bool
	knownGen uint64
	exists   bool
	name     string
	modseq   int64
	validity uint32
}

func newHub(s *Store) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &hub{s: s, cancel: cancel, done: make(chan struct{}), folders: map[int64]*watch{}}
	go h.run(ctx)
	return h
}

func (h *hub) close() {
	h.cancel()
	<-h.done
}

func (h *hub) watch(id int64) *watch {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.folders[id]
	if w == nil {
		w = &watch{id: id}
		h.folders[id] = w
	}
	w.refs++
	return w
}

func (h *hub) release(w *watch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.refs--; w.refs == 0 {
		delete(h.folders, w.id)
	}
}

// changed marks folders changed: a notification came, or this process
// committed a change of them (its notification may come later, and a
// session must see its own change at once).
func (h *hub) changed(ids ...int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if w := h.folders[id]; w != nil {
			w.gen++
		}
	}
}

func (h *hub) setUp(up bool) {
	h.mu.Lock()
	h.up = up
	h.mu.Unlock()
}

// stamp answers Folder.Stamp: from memory when the hub is up and no
// notification came since the row was read; otherwise from the database,
// remembered if no notification came during the read. Not settled while
// the listener is down: a change now would not reach us.
func (h *hub) stamp(f *folder) (mailstore.Stamp, bool, error) {
	w := f.w
	h.mu.Lock()
	up, gen := h.up, w.gen
	if up && w.known && w.knownGen == gen {
		st, err := w.stampFor(f)
		h.mu.Unlock()
		return st, true, err
	}
	h.mu.Unlock()

	ctx, cancel := f.s.op(f.ctx)
	defer cancel()
	row := watch{id: f.id}
	var validity int64
	err := f.s.pool.QueryRow(ctx, `SELECT name, modseq, uidvalidity FROM mail_folders WHERE id = $1`, f.id).Scan(&row.name, &row.modseq, &validity)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return mailstore.Stamp{}, false, dbErr("reading folder state", err)
	default:
		row.exists, row.validity = true, uint32(validity)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if up && h.up && w.gen == gen {
		w.known, w.knownGen = true, gen
		w.exists, w.name, w.modseq, w.validity = row.exists, row.name, row.modseq, row.validity
	}
	st, err := row.stampFor(f)
	return st, up, err
}

func (w *watch) stampFor(f *folder) (mailstore.Stamp, error) {
	if !w.exists || w.name != f.name {
		return mailstore.Stamp{}, f.gone()
	}
	return mailstore.Stamp{uint64(w.id), uint64(w.modseq), uint64(w.validity)}, nil
}

// run keeps a LISTEN connection until ctx ends, reconnecting after a
// failure with a growing pause.
func (h *hub) run(ctx context.Context) {
	defer close(h.done)
	retry := 100 * time.Millisecond
	wasDown := false
	for ctx.Err() == nil {
		err := h.listen(ctx, func() {
			if wasDown {
				h.s.log.Info("pgstore: change listener connected again")
			}
			wasDown = false
			retry = 100 * time.Millisecond
		})
		h.setUp(false)
		if ctx.Err() != nil {
			return
		}
		if !wasDown {
			h.s.log.Warn("pgstore: change listener lost its connection; IMAP sessions poll the database until it is back", "err", err)
			wasDown = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, listenRetryMax)
	}
}

// listen connects, listens and marks folders changed until the connection
// fails or ctx ends.
func (h *hub) listen(ctx context.Context, connected func()) error {
	cctx, cancel := context.WithTimeout(ctx, h.s.opTimeout)
	conn, err := pgx.ConnectConfig(cctx, h.s.pool.Config().ConnConfig.Copy())
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+notifyChannel)
	}
	cancel()
	if err != nil {
		if conn != nil {
			closeConn(conn)
		}
		return err
	}
	defer closeConn(conn)
	// Listening from here on: whatever changed before may have been
	// missed, so every open folder is read again once.
	h.mu.Lock()
	h.up = true
	for _, w := range h.folders {
		w.gen++
	}
	h.mu.Unlock()
	connected()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if id, perr := strconv.ParseInt(n.Payload, 10, 64); perr == nil {
				h.changed(id)
			}
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case conn.IsClosed() || !errors.Is(err, context.DeadlineExceeded):
			return err
		}
		// Quiet for a while: check that the connection still answers.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return err
		}
	}
}
