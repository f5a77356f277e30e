package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/agua-mail/agua/internal/directory"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/pop3d"
	"github.com/agua-mail/agua/shield"
)

// listenPOP3 binds the POP3 (STLS) and POP3S (implicit TLS) listeners
// behind the shield. The TLS handshake of POP3S runs in each session's
// goroutine, never in Accept.
func (s *Server) listenPOP3(tlsCfg *tls.Config) error {
	c := s.cfg.POP3
	backend := &pop3Backend{dir: s.dir, store: s.store, log: s.log}
	hooks := pop3d.Hooks{
		AccountDelay: s.shield.AccountDelay,
		Auth:         func(ss *pop3d.Session, ok bool) { s.metrics.Auth(ss.Listener, ok) },
	}
	for _, group := range []struct {
		implicit bool
		addrs    []string
	}{
		{false, c.Listen},
		{true, c.TLSListen},
	} {
		if len(group.addrs) == 0 {
			continue
		}
		srv, err := pop3d.NewServer(pop3d.Config{
			Hostname:                  s.cfg.Hostname,
			TLS:                       tlsCfg,
			ImplicitTLS:               group.implicit,
			PreAuthTimeout:            c.PreAuthTimeout,
			IdleTimeout:               c.IdleTimeout,
			SessionTimeout:            c.SessionTimeout,
			MaxLineLength:             c.MaxLineLength,
			MaxErrors:                 c.MaxErrors,
			AuthFailureDelay:          c.AuthDelay,
			AllowInsecureAuthLoopback: c.AllowInsecureAuth,
		}, backend, hooks, s.log)
		if err != nil {
			return err
		}
		s.pop3 = append(s.pop3, srv)
		if err := s.bind(srv.Name(), group.addrs, c.MaxConns, pop3Reject, group.implicit, srv); err != nil {
			return err
		}
	}
	return nil
}

// pop3Reject answers a refused connection instead of the greeting
// (RFC 2449 8, RFC 3206 4: [SYS/TEMP] for a temporary refusal), with the
// shield's reason as it is: it is complete client text.
func pop3Reject(c net.Conn, d shield.Decision) {
	if d.Temporary {
		fmt.Fprintf(c, "-ERR [SYS/TEMP] %s\r\n", d.Reason)
		return
	}
	fmt.Fprintf(c, "-ERR [AUTH] %s\r\n", d.Reason)
}

// pop3Backend connects POP3 sessions to the accounts directory and the
// INBOX of the mail store.
type pop3Backend struct {
	dir   *directory.Directory
	store *maildir.Store
	log   *slog.Logger
}

var _ pop3d.Backend = (*pop3Backend)(nil)

var errPOP3TempAuth = pop3d.Errorf("SYS/TEMP", "Temporary authentication failure, try again later")

func (b *pop3Backend) Authenticate(ctx context.Context, s *pop3d.Session, user, pass string) (string, error) {
	u, err := b.dir.Authenticate(ctx, user, pass)
	switch {
	case err == nil:
		return u.Address, nil
	case errors.Is(err, directory.ErrAuthFailed), errors.Is(err, directory.ErrInvalid):
		return "", err
	default:
		e := *errPOP3TempAuth
		e.Cause = err
		return "", &e
	}
}

// OpenMaildrop locks the user's INBOX, lists it, and moves what was in
// new/ to cur/: the client has now seen it (Maildir).
func (b *pop3Backend) OpenMaildrop(ctx context.Context, s *pop3d.Session, user string) (pop3d.Maildrop, error) {
	f, err := b.store.Folder(user, "")
	if err != nil {
		return nil, pop3Temp(err)
	}
	unlock, err := f.Lock()
	if err != nil {
		f.Close()
		if errors.Is(err, maildir.ErrLocked) {
			return nil, pop3d.ErrInUse
		}
		return nil, pop3Temp(err)
	}
	l, err := f.List()
	if err != nil {
		unlock()
		f.Close()
		return nil, pop3Temp(err)
	}
	md := &maildrop{f: f, unlock: unlock, log: b.log, user: user}
	var fresh []uint32
	for _, m := range l.Messages {
		md.uids = append(md.uids, m.UID)
		// Dovecot's default pop3_uidl_format, %08Xu%08Xv: clients moving
		// between the two keep their "leave on server" state.
		md.msgs = append(md.msgs, pop3d.Message{UIDL: fmt.Sprintf("%08X%08X", m.UID, l.UIDValidity), Size: m.Size})
		if m.New {
			fresh = append(fresh, m.UID)
		}
	}
	if err := f.MarkSeen(fresh); err != nil {
		b.log.Warn("pop3 moving messages to cur/ failed", "user", user, "err", err)
	}
	return md, nil
}

func pop3Temp(err error) error {
	return &pop3d.Error{Code: "SYS/TEMP", Msg: "Temporary local problem, try again later", Cause: err}
}

// maildrop is a locked INBOX with its message list fixed at login.
type maildrop struct {
	f      *maildir.Folder
	unlock func()
	log    *slog.Logger
	user   string
	uids   []uint32
	msgs   []pop3d.Message
}

func (m *maildrop) Messages() []pop3d.Message { return m.msgs }

var errPOP3Gone = pop3d.Errorf("", "Message was removed by another client")

func (m *maildrop) Open(i int) (io.ReadCloser, error) {
	fd, _, err := m.f.Open(m.uids[i])
	if errors.Is(err, maildir.ErrNoMessage) {
		return nil, errPOP3Gone
	}
	if err != nil {
		return nil, pop3Temp(err)
	}
	return fd, nil
}

// Update marks retrieved messages seen (the Maildir S flag, as Dovecot's
// POP3 does) and deletes those marked deleted.
func (m *maildrop) Update(deleted, retrieved []int) error {
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
	m.release()
	return err
}

func (m *maildrop) release() {
	if m.unlock != nil {
		m.unlock()
		m.unlock = nil
	}
}

func (m *maildrop) Close() error {
	m.release()
	return m.f.Close()
}
