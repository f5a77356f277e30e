package router

import (
	"context"
	"errors"
	"io"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/smtpd"
)

// transaction is one SMTP transaction: the recipients resolved at RCPT
// time, split by target, kept here until Commit delivers them.
type transaction struct {
	r      *Router
	s      *smtpd.Session
	from   string
	local  []Recipient
	remote []Recipient
	seen   map[string]bool // mailboxes and remote addresses already routed
	msg    io.ReaderAt
	size   int64
}

// AddRcpt resolves rcpt and routes it: to the local target for local
// mailboxes (all of an alias's, each once per message), to the remote
// target for other domains when relaying is allowed.
func (t *transaction) AddRcpt(ctx context.Context, rcpt string) error {
	users, err := t.r.resolve(ctx, rcpt)
	switch {
	case errors.Is(err, accounts.ErrNotLocal):
		return t.addRemote(ctx, rcpt)
	case errors.Is(err, accounts.ErrNoSuchUser), errors.Is(err, accounts.ErrInvalid):
		return smtpd.ErrUnknownRecipient
	case err != nil:
		return smtpd.ErrTempLocal.WithCause(err)
	}
	// Every mailbox must take the message, or the recipient is refused.
	for _, u := range users {
		if err := t.r.cfg.Local.Check(ctx, Recipient{Address: u.Address, Quota: u.Quota}); err != nil {
			return err
		}
	}
	for _, u := range users {
		if !t.seen[u.Address] {
			t.seen[u.Address] = true
			t.local = append(t.local, Recipient{Address: u.Address, Quota: u.Quota})
		}
	}
	return nil
}

// addRemote applies the relay policy: RFC 5321 3.6.2, an MX relays for no
// one; an authenticated submission (RFC 6409) may send out through the
// remote target, when there is one.
func (t *transaction) addRemote(ctx context.Context, rcpt string) error {
	if t.s.Mode == smtpd.ModeMX || t.s.User == "" {
		return smtpd.ErrRelayDenied
	}
	remote := t.r.cfg.Remote
	if remote == nil {
		return errNoOutbound
	}
	if err := remote.Check(ctx, Recipient{Address: rcpt}); err != nil {
		return err
	}
	if !t.seen[rcpt] {
		t.seen[rcpt] = true
		t.remote = append(t.remote, Recipient{Address: rcpt})
	}
	return nil
}

// Body keeps the message for Commit. Content checks (DKIM verification,
// RFC 6376) belong here.
func (t *transaction) Body(ctx context.Context, msg io.ReaderAt, size int64) error {
	t.msg, t.size = msg, size
	return nil
}

// Commit delivers to the local target first, then hands remote recipients
// to the remote target. A local refusal (quota) leaves nothing queued. A
// queue failure after local delivery makes the client retry and the local
// recipients receive the message twice: taking both in one durable step is
// the outbound queue's to do (issue 12).
func (t *transaction) Commit(ctx context.Context) error {
	if t.msg == nil {
		return errors.New("router: commit without a body")
	}
	if len(t.local) > 0 {
		if err := t.r.cfg.Local.Deliver(ctx, Envelope{From: t.from, Rcpts: t.local}, t.msg, t.size); err != nil {
			return err
		}
	}
	if len(t.remote) > 0 {
		if err := t.r.cfg.Remote.Deliver(ctx, Envelope{From: t.from, Rcpts: t.remote}, t.msg, t.size); err != nil {
			return err
		}
	}
	t.msg = nil
	return nil
}

// Abort forgets the transaction; nothing was delivered.
func (t *transaction) Abort() { t.msg = nil }
