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
	utf8   bool
	local  []Recipient
	remote []Recipient
	seen   map[string]bool // mailboxes and remote addresses already routed
	msg    io.ReaderAt
	size   int64
	limits SendTx // authenticated submission: the sending limits of this message
}

// limitRcpt asks the sending limits about one more recipient.
func (t *transaction) limitRcpt(rcpt string, external bool) error {
	if t.limits == nil {
		return nil
	}
	if err := t.limits.Rcpt(rcpt, external, t.r.cfg.Now()); err != nil {
		return limitReply(err)
	}
	return nil
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
	if err := t.limitRcpt(rcpt, false); err != nil {
		return err
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
	if err := t.limitRcpt(rcpt, true); err != nil {
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

// Commit delivers the message to every recipient, or to none (issue 12:
// one transaction). With a remote target that is a Preparer (the outbound
// queue) the steps are:
//
//  1. the remote copy is written to the queue but not committed (signed,
//     on disk, invisible to delivery);
//  2. local delivery, durable: a refusal (quota) or failure aborts the
//     queue write, so nothing was delivered or queued;
//  3. the queue write is committed (a rename and one sync).
//
// The failure window is step 3 alone: if the commit fails, or the process
// dies between the local delivery's sync and the queue's, the local
// recipients have the message and the remote ones do not, the client
// gets no 250 and sends again, and the local recipients get it twice. No
// order avoids a window with two stores; this one puts it in the step that
// fails least (a rename in a folder already written to), never loses mail
// that was acknowledged, and never sends a remote copy of a message the
// client was told failed.
//
// A remote target that cannot prepare is given the message after local
// delivery (the same window, wider: its whole write).
func (t *transaction) Commit(ctx context.Context) error {
	if t.msg == nil {
		return errors.New("router: commit without a body")
	}
	// The sending limits count the message once it is certain to be
	// delivered but for a failure of ours (another session of the
	// account may have used up the limit meanwhile).
	if t.limits != nil {
		if err := t.limits.Commit(t.r.cfg.Now()); err != nil {
			return limitReply(err)
		}
	}
	env := func(rcpts []Recipient) Envelope {
		return Envelope{From: t.from, Rcpts: rcpts, UTF8: t.utf8, Account: t.s.User}
	}
	var prepared Prepared
	if p, ok := t.r.cfg.Remote.(Preparer); ok && len(t.remote) > 0 {
		var err error
		if prepared, err = p.Prepare(ctx, env(t.remote), t.msg, t.size); err != nil {
			return err
		}
	}
	if len(t.local) > 0 {
		if err := t.r.cfg.Local.Deliver(ctx, env(t.local), t.msg, t.size); err != nil {
			if prepared != nil {
				prepared.Abort()
			}
			return err
		}
	}
	switch {
	case prepared != nil:
		if err := prepared.Commit(ctx); err != nil {
			return err
		}
	case len(t.remote) > 0:
		if err := t.r.cfg.Remote.Deliver(ctx, env(t.remote), t.msg, t.size); err != nil {
			return err
		}
	}
	t.msg = nil
	return nil
}

// Abort forgets the transaction; nothing was delivered.
func (t *transaction) Abort() { t.msg = nil }
