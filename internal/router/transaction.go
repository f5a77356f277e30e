package router

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/mailauth"
	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/internal/smtpd"
	"github.com/agua-mail/agua/shield"
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
	auth   *mailauth.Check // sender authentication, on MX; nil otherwise
	folder string          // where local recipients get the message; "" inbox
	events []shield.Event  // for the shield (smtpd.Observer)
}

var _ smtpd.Observer = (*transaction)(nil)

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

// Body keeps the message for Commit, authenticated first on MX: the
// Authentication-Results field is added (and forged ones dropped), and the
// policy may refuse the message, defer it or send it to the Junk folder.
func (t *transaction) Body(ctx context.Context, msg io.ReaderAt, size int64) error {
	t.msg, t.size = msg, size
	if t.auth == nil {
		return nil
	}
	res, err := t.auth.Finish(ctx, msg, size)
	t.auth.Close()
	if errors.Is(err, mailauth.ErrHeaderTooLong) {
		// RFC 3463 5.3.4: too big for the system. A field past the
		// bound could not be checked for a forged result.
		return smtpd.Errorf(552, "5.3.4", "Message header section is larger than %d bytes", mailauth.MaxHeader)
	}
	if err != nil {
		return smtpd.ErrTempLocal.WithCause(err)
	}
	v := res.Decide(t.r.cfg.AuthPolicy)
	t.r.cfg.Log.Info("mail auth", "session", t.s.ID, "client", t.s.RemoteAddr.String(),
		"spf", string(res.SPF.Result), "spf_domain", res.SPF.Domain, "dkim", dkimSummary(res.DKIM),
		"dmarc", res.DMARC.Result, "from_domain", res.DMARC.Domain, "policy", string(res.DMARC.Policy),
		"action", v.Action.String(), "forged_ar", res.Forged())
	if v.DMARCFail {
		t.events = append(t.events, mailevents.DMARCFail)
	}
	switch v.Action {
	case mailauth.Reject:
		// RFC 7489 6.7 / RFC 7208 8.4: refuse at the end of DATA, with
		// the reason.
		return smtpd.Errorf(550, v.Code, "%s", v.Reason)
	case mailauth.Defer:
		return smtpd.Errorf(451, v.Code, "%s", v.Reason)
	case mailauth.Junk:
		t.folder = t.r.cfg.JunkFolder
	}
	t.msg, t.size = res.Message(msg, size)
	return nil
}

// dkimSummary is "pass:example.org,fail:other.example" for the log.
func dkimSummary(ds []mailauth.DKIMResult) string {
	if len(ds) == 0 {
		return "none"
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Result + ":" + d.Domain
	}
	return strings.Join(parts, ",")
}

// Observed returns the DMARC failure for the shield (smtpd.Observer).
func (t *transaction) Observed() []shield.Event { return t.events }

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
	env := func(rcpts []Recipient) Envelope {
		return Envelope{From: t.from, Rcpts: rcpts, UTF8: t.utf8, Account: t.s.User}
	}
	local := t.local
	if t.folder != "" {
		local = make([]Recipient, len(t.local))
		for i, r := range t.local {
			r.Folder = t.folder
			local[i] = r
		}
	}
	var prepared Prepared
	if p, ok := t.r.cfg.Remote.(Preparer); ok && len(t.remote) > 0 {
		var err error
		if prepared, err = p.Prepare(ctx, env(t.remote), t.msg, t.size); err != nil {
			return err
		}
	}
	if len(t.local) > 0 {
		if err := t.r.cfg.Local.Deliver(ctx, env(local), t.msg, t.size); err != nil {
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

// Abort forgets the transaction; nothing was delivered. Lookups still
// running stop.
func (t *transaction) Abort() {
	t.msg = nil
	if t.auth != nil {
		t.auth.Close()
	}
}
