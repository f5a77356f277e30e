package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/agua-mail/agua/internal/directory"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/smtpd"
)

// mailBackend connects SMTP sessions to the accounts directory and the mail
// store, and owns the relay policy: local domains only until the outbound
// queue exists.
type mailBackend struct {
	dir      *directory.Directory
	store    *maildir.Store
	hostname string
}

var _ smtpd.Backend = (*mailBackend)(nil)

var (
	errTempAuth  = smtpd.Errorf(454, "4.7.0", "Temporary authentication failure")
	errRelay     = smtpd.Errorf(550, "5.7.1", "Relay access denied")
	errNoUser    = smtpd.Errorf(550, "5.1.1", "No such user here")
	errNoOutbond = smtpd.Errorf(550, "5.3.0", "Outbound delivery is not available on this server; only local recipients are accepted")
	errNotOwned  = smtpd.Errorf(553, "5.7.1", "Sender address is not owned by the authenticated user")
	errFull      = smtpd.Errorf(452, "4.2.2", "Mailbox full")
	errTempLocal = smtpd.Errorf(451, "4.3.0", "Temporary local problem, try again later")
)

func (b *mailBackend) Authenticate(ctx context.Context, s *smtpd.Session, user, pass string) (string, error) {
	u, err := b.dir.Authenticate(ctx, user, pass)
	switch {
	case err == nil:
		return u.Address, nil
	case errors.Is(err, directory.ErrAuthFailed), errors.Is(err, directory.ErrInvalid):
		return "", err
	default:
		e := *errTempAuth
		e.Cause = err
		return "", &e
	}
}

// CheckSender: on MX anyone may send (sender authentication comes with
// SPF/DKIM later); on submission the user must own the address or an alias
// of theirs (RFC 6409 6.1).
func (b *mailBackend) CheckSender(ctx context.Context, s *smtpd.Session, from string) error {
	if s.Mode == smtpd.ModeMX {
		return nil
	}
	if from == "" {
		return errNotOwned
	}
	ok, err := b.dir.CanSendAs(ctx, s.User, from)
	if err != nil && !errors.Is(err, directory.ErrInvalid) && !errors.Is(err, directory.ErrNotFound) {
		return tempErr(err)
	}
	if !ok {
		return errNotOwned
	}
	return nil
}

func (b *mailBackend) CheckRecipient(ctx context.Context, s *smtpd.Session, env *smtpd.Envelope, rcpt string) error {
	users, err := b.resolve(ctx, rcpt)
	switch {
	case errors.Is(err, directory.ErrNotLocal):
		if s.Mode == smtpd.ModeMX {
			return errRelay
		}
		return errNoOutbond
	case errors.Is(err, directory.ErrNoSuchUser), errors.Is(err, directory.ErrInvalid):
		return errNoUser
	case err != nil:
		return tempErr(err)
	}
	// A mailbox already over quota is refused early, with a temporary code
	// (RFC 3463 4.2.2) so the sender retries after the user cleans up.
	for _, u := range users {
		used, _, err := b.store.Usage(u.Address)
		if err != nil {
			return tempErr(err)
		}
		if used >= u.Quota {
			return errFull
		}
	}
	// Deliver uses what was resolved here instead of asking again.
	if env.Routes == nil {
		env.Routes = map[string]any{}
	}
	env.Routes[rcpt] = users
	return nil
}

// resolve maps a recipient to local mailboxes. The bare "postmaster"
// (RFC 5321 4.1.1.3: must be accepted) is postmaster at the server's host
// name when that is a local domain, else at the first local domain.
func (b *mailBackend) resolve(ctx context.Context, rcpt string) ([]directory.User, error) {
	if !strings.EqualFold(rcpt, "postmaster") {
		return b.dir.Resolve(ctx, rcpt)
	}
	users, err := b.dir.Resolve(ctx, "postmaster@"+b.hostname)
	if !errors.Is(err, directory.ErrNotLocal) {
		return users, err
	}
	domains, err := b.dir.ListDomains(ctx)
	if err != nil {
		return nil, err
	}
	if len(domains) == 0 {
		return nil, directory.ErrNoSuchUser
	}
	return b.dir.Resolve(ctx, "postmaster@"+domains[0])
}

func (b *mailBackend) Deliver(ctx context.Context, s *smtpd.Session, env *smtpd.Envelope, msg io.ReaderAt, size int64) error {
	var rcpts []maildir.Recipient
	seen := map[string]bool{}
	for _, r := range env.Recipients {
		users, ok := env.Routes[r].([]directory.User)
		if !ok {
			var err error
			if users, err = b.resolve(ctx, r); err != nil {
				// The account vanished: fail the whole message temporarily
				// rather than deliver to part of it.
				return tempErr(fmt.Errorf("resolve %s: %w", r, err))
			}
		}
		for _, u := range users {
			if seen[u.Address] {
				continue
			}
			seen[u.Address] = true
			// RFC 5321 4.4: Return-Path is added at final delivery.
			prefix := fmt.Sprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", env.From, u.Address)
			rcpts = append(rcpts, maildir.Recipient{Mailbox: u.Address, Quota: u.Quota, Prefix: []byte(prefix)})
		}
	}
	err := b.store.Deliver(ctx, maildir.Message{R: msg, Size: size}, rcpts)
	var qe *maildir.QuotaError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &qe):
		if qe.Permanent {
			return smtpd.Errorf(552, "5.2.2", "Message exceeds the mailbox quota of %s", qe.Mailbox)
		}
		return smtpd.Errorf(452, "4.2.2", "Mailbox %s is full", qe.Mailbox)
	default:
		return tempErr(err)
	}
}

func tempErr(err error) error {
	e := *errTempLocal
	e.Cause = err
	return &e
}
