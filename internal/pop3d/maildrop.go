package pop3d

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/mailstore"
)

// NewBackend returns the Backend agua serves with: logins checked against
// an accounts directory, and the user's INBOX of a mail store as the
// maildrop. log may be nil.
func NewBackend(dir accounts.Lookup, store mailstore.Store, log *slog.Logger) Backend {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &storeBackend{dir: dir, store: store, log: log}
}

type storeBackend struct {
	dir   accounts.Lookup
	store mailstore.Store
	log   *slog.Logger
}

var errTempAuth = Errorf("SYS/TEMP", "Temporary authentication failure, try again later")

func (b *storeBackend) Authenticate(ctx context.Context, s *Session, user, pass string) (string, error) {
	u, err := b.dir.Authenticate(ctx, user, pass)
	switch {
	case err == nil:
		return u.Address, nil
	case errors.Is(err, accounts.ErrAuthFailed), errors.Is(err, accounts.ErrInvalid):
		return "", err
	default:
		e := *errTempAuth
		e.Cause = err
		return "", &e
	}
}

// UIDL is a message's unique id: Dovecot's default pop3_uidl_format,
// %08Xu%08Xv, the store's UID and UIDVALIDITY, so the id names the message
// IMAP calls by that UID, and clients moving between the two servers keep
// their "leave on server" state (RFC 1939 7).
func UIDL(uid, validity uint32) string { return fmt.Sprintf("%08X%08X", uid, validity) }

// OpenMaildrop locks the user's INBOX, lists it, and marks what was new as
// seen by a client (Maildir: moved from new/ to cur/).
func (b *storeBackend) OpenMaildrop(ctx context.Context, s *Session, user string) (Maildrop, error) {
	f, err := b.store.Folder(ctx, user, "")
	if err != nil {
		return nil, tempLocal(err)
	}
	unlock, err := f.Lock()
	if err != nil {
		f.Close()
		if errors.Is(err, mailstore.ErrLocked) {
			return nil, ErrInUse
		}
		return nil, tempLocal(err)
	}
	l, err := f.List()
	if err != nil {
		unlock()
		f.Close()
		return nil, tempLocal(err)
	}
	md := &storeMaildrop{f: f, unlock: unlock, log: b.log, user: user}
	var fresh []uint32
	for _, m := range l.Messages {
		md.uids = append(md.uids, m.UID)
		md.msgs = append(md.msgs, Message{UIDL: UIDL(m.UID, l.UIDValidity), Size: m.Size})
		if m.New {
			fresh = append(fresh, m.UID)
		}
	}
	if err := f.MarkSeen(fresh); err != nil {
		b.log.Warn("pop3 moving messages to cur/ failed", "user", user, "err", err)
	}
	return md, nil
}

func tempLocal(err error) error {
	return &Error{Code: "SYS/TEMP", Msg: "Temporary local problem, try again later", Cause: err}
}

// storeMaildrop is a locked INBOX with its message list fixed at login.
type storeMaildrop struct {
	f      mailstore.Folder
	unlock func()
	log    *slog.Logger
	user   string
	uids   []uint32
	msgs   []Message
}

func (m *storeMaildrop) Messages() []Message { return m.msgs }

var errGone = Errorf("", "Message was removed by another client")

func (m *storeMaildrop) Open(i int) (io.ReadCloser, error) {
	rc, _, err := m.f.Open(m.uids[i])
	if errors.Is(err, mailstore.ErrNoMessage) {
		return nil, errGone
	}
	if err != nil {
		return nil, tempLocal(err)
	}
	return rc, nil
}

// Update marks retrieved messages seen (the S flag, as Dovecot's POP3
// does) and deletes those marked deleted.
func (m *storeMaildrop) Update(deleted, retrieved []int) error {
	pick := func(idx []int) []uint32 {
		out := make([]uint32, len(idx))
		for i, n := range idx {
			out[i] = m.uids[n]
		}
		return out
	}
	if err := m.f.SetFlags(pick(retrieved), "S", ""); err != nil {
		m.log.Warn("pop3 setting seen flags failed", "user", m.user, "err", err)
	}
	err := m.f.Delete(pick(deleted))
	// RFC 1939 6: the UPDATE state releases the maildrop before QUIT's
	// reply, so a client that logs in again at once (a cached login is
	// quick) does not find its own lock.
	m.unlock()
	return err
}

// Close releases the lock (unlock may be called more than once).
func (m *storeMaildrop) Close() error {
	m.unlock()
	return m.f.Close()
}
