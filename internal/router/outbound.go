package router

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/smtpd"
)

// Begin is the part of a queue the Outbound target needs (queue.Queue's
// Begin).
type Begin func(ctx context.Context, env queue.Envelope, body io.Reader) (queue.Tx, error)

// SignFunc returns header fields to put before msg (DKIM-Signature,
// RFC 6376), or nil to send it unsigned. envFrom is the reverse-path. An
// error fails the transaction with 451.
type SignFunc func(envFrom string, msg []byte) ([]byte, error)

// Outbound is the remote target: the outbound queue. Each message is
// signed once, here, before it is queued (the delivery engine sends the
// queued bytes as they are), and written with queue.Begin so the router
// can commit it together with local delivery (see Preparer).
type Outbound struct {
	begin Begin
	sign  SignFunc
}

var _ Preparer = (*Outbound)(nil)

// NewOutbound returns the remote target writing through begin; sign may be
// nil (nothing is signed).
func NewOutbound(begin Begin, sign SignFunc) *Outbound {
	return &Outbound{begin: begin, sign: sign}
}

// Check accepts every recipient: the relay policy is the router's.
func (o *Outbound) Check(ctx context.Context, rcpt Recipient) error { return nil }

// Deliver queues the message and returns once it is durable.
func (o *Outbound) Deliver(ctx context.Context, env Envelope, msg io.ReaderAt, size int64) error {
	p, err := o.Prepare(ctx, env, msg, size)
	if err != nil {
		return err
	}
	return p.Commit(ctx)
}

// Prepare signs the message and writes it to the queue, not yet visible.
func (o *Outbound) Prepare(ctx context.Context, env Envelope, msg io.ReaderAt, size int64) (Prepared, error) {
	var body io.Reader = io.NewSectionReader(msg, 0, size)
	if o.sign != nil {
		raw := make([]byte, size)
		if _, err := io.ReadFull(io.NewSectionReader(msg, 0, size), raw); err != nil {
			return nil, smtpd.ErrTempLocal.WithCause(err)
		}
		sig, err := o.sign(env.From, raw)
		if err != nil {
			return nil, smtpd.ErrTempLocal.WithCause(err)
		}
		body = io.MultiReader(bytes.NewReader(sig), bytes.NewReader(raw))
	}
	qe := queue.Envelope{From: env.From, UTF8: env.UTF8, Account: env.Account, To: make([]string, len(env.Rcpts))}
	for i, r := range env.Rcpts {
		qe.To[i] = r.Address
	}
	tx, err := o.begin(ctx, qe, body)
	if err != nil {
		return nil, smtpd.ErrTempLocal.WithCause(fmt.Errorf("outbound queue: %w", err))
	}
	return queuedTx{tx}, nil
}

type queuedTx struct{ tx queue.Tx }

func (q queuedTx) Commit(ctx context.Context) error {
	if _, err := q.tx.Commit(ctx); err != nil {
		return smtpd.ErrTempLocal.WithCause(fmt.Errorf("outbound queue: %w", err))
	}
	return nil
}

func (q queuedTx) Abort() { q.tx.Abort() }
