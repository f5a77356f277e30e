package router

import (
	"context"
	"errors"
	"io"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/smtpd"
)

// MailboxWriter is final delivery into local mailboxes, as the local target
// needs it: internal/maildir's Store and internal/pgstore's Store implement
// it.
type MailboxWriter interface {
	// Used returns the bytes stored in mailbox, for the quota check at
	// RCPT time; it may lag a little behind deliveries in progress.
	Used(ctx context.Context, mailbox string) (int64, error)
	// Deliver writes msg into every recipient's mailbox, each copy after
	// its recipient's Prefix, and returns nil only once every copy is
	// durable (the 250 after DATA waits for it). All or nothing: a
	// recipient over quota (*mailstore.QuotaError) or any failure, and no
	// mailbox gets it. A store that cannot serve now returns an error
	// matching mailstore.ErrUnavailable.
	Deliver(ctx context.Context, msg mailstore.Delivery, rcpts []mailstore.Recipient) error
}

// Local is the target for local mailboxes.
type Local struct {
	store MailboxWriter
}

// NewLocal returns the local target on store.
func NewLocal(store MailboxWriter) *Local { return &Local{store: store} }

// Check defers a mailbox already over quota, with a temporary code
// (RFC 3463 4.2.2) so the sender retries after the user cleans up.
func (l *Local) Check(ctx context.Context, rcpt Recipient) error {
	used, err := l.store.Used(ctx, rcpt.Address)
	if err != nil {
		return smtpd.ErrTempLocal.WithCause(err)
	}
	if used >= rcpt.Quota {
		return smtpd.ErrMailboxFull
	}
	return nil
}

// Deliver writes the message into every mailbox, each copy starting with
// Return-Path and Delivered-To (RFC 5321 4.4: Return-Path is added at final
// delivery). All or nothing: over quota, no mailbox gets it.
func (l *Local) Deliver(ctx context.Context, env Envelope, msg io.ReaderAt, size int64) error {
	// Every copy's prefix in one buffer.
	const fixed = len("Return-Path: <>\r\nDelivered-To: \r\n")
	n := 0
	for _, r := range env.Rcpts {
		n += fixed + len(env.From) + len(r.Address)
	}
	prefixes := make([]byte, 0, n)
	rcpts := make([]mailstore.Recipient, len(env.Rcpts))
	for i, r := range env.Rcpts {
		start := len(prefixes)
		prefixes = append(prefixes, "Return-Path: <"...)
		prefixes = append(prefixes, env.From...)
		prefixes = append(prefixes, ">\r\nDelivered-To: "...)
		prefixes = append(prefixes, r.Address...)
		prefixes = append(prefixes, "\r\n"...)
		rcpts[i] = mailstore.Recipient{Mailbox: r.Address, Quota: r.Quota, Prefix: prefixes[start:len(prefixes):len(prefixes)], Folder: r.Folder}
	}
	if err := l.store.Deliver(ctx, mailstore.Delivery{R: msg, Size: size}, rcpts); err != nil {
		return deliveryError(err)
	}
	return nil
}

// deliveryError is the reply to a store's failed delivery. Apart from
// Deliver, whose success then allocates nothing for errors.As's target.
func deliveryError(err error) error {
	var qe *mailstore.QuotaError
	switch {
	case errors.As(err, &qe):
		if qe.Permanent {
			return smtpd.Errorf(552, "5.2.2", "Message exceeds the mailbox quota of %s", qe.Mailbox)
		}
		return smtpd.Errorf(452, "4.2.2", "Mailbox %s is full", qe.Mailbox)
	default:
		return smtpd.ErrTempLocal.WithCause(err)
	}
}

// Queue adapts an outbound queue to a Target: every remote recipient is
// accepted at RCPT time, and the message is handed to the function, which
// must return only once it is durable. Wiring, for a queue with
// Enqueue(ctx, Envelope, io.Reader) (id string, err error):
//
//	router.Queue(func(ctx context.Context, from string, rcpts []string, msg io.Reader) error {
//		_, err := q.Enqueue(ctx, queue.Envelope{From: from, Rcpts: rcpts}, msg)
//		return err
//	})
type Queue func(ctx context.Context, from string, rcpts []string, msg io.Reader) error

// Check accepts every recipient.
func (q Queue) Check(ctx context.Context, rcpt Recipient) error { return nil }

// Deliver enqueues the message for env's recipients.
func (q Queue) Deliver(ctx context.Context, env Envelope, msg io.ReaderAt, size int64) error {
	rcpts := make([]string, len(env.Rcpts))
	for i, r := range env.Rcpts {
		rcpts[i] = r.Address
	}
	return q(ctx, env.From, rcpts, io.NewSectionReader(msg, 0, size))
}
