package smtpd

import (
	"context"
	"io"
	"strings"
	"sync"
)

// memBackend is the reference Backend for this package's own tests: one
// local domain (example.test) whose mailboxes are listed in users, the
// accounts in testAccounts, each owning its own address, and messages kept
// in memory. It records what it was asked, so tests can check
// that the session drives a transaction correctly.
type memBackend struct {
	mu        sync.Mutex
	users     map[string]bool                        // local mailboxes; nil: every address at example.test exists
	failBody  error                                  // returned by Body when set
	onRcpt    func(ctx context.Context, rcpt string) // called first by AddRcpt when set
	onAuth    func(ctx context.Context) error        // called first by Authenticate when set; its error is returned
	delivered []memMessage
	aborted   int
	open      int // transactions started and not yet ended
}

type memMessage struct {
	From  string
	Rcpts []string
	Data  string
}

// testAccounts are the submission accounts of memBackend.
var testAccounts = map[string]string{
	"u@example.test":     "p",
	"alice@example.test": "correct horse battery",
}

func (b *memBackend) Authenticate(ctx context.Context, s *Session, user, pass string) (string, error) {
	if b.onAuth != nil {
		if err := b.onAuth(ctx); err != nil {
			return "", err
		}
	}
	if p, ok := testAccounts[strings.ToLower(user)]; ok && p == pass {
		return strings.ToLower(user), nil
	}
	return "", ErrAuthFailed
}

func (b *memBackend) NewTransaction(ctx context.Context, s *Session, mail Mail) (Transaction, error) {
	if s.Mode != ModeMX && mail.From != s.User {
		return nil, ErrSenderNotOwned
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open++
	return &memTx{b: b, from: mail.From}, nil
}

type memTx struct {
	b     *memBackend
	from  string
	rcpts []string
	data  string
	ended bool
}

func (t *memTx) AddRcpt(ctx context.Context, rcpt string) error {
	if t.b.onRcpt != nil {
		t.b.onRcpt(ctx, rcpt)
	}
	local, domain, _ := strings.Cut(strings.ToLower(rcpt), "@")
	if domain != "example.test" && rcpt != "postmaster" {
		return ErrRelayDenied
	}
	t.b.mu.Lock()
	defer t.b.mu.Unlock()
	if t.b.users != nil && !t.b.users[local] && rcpt != "postmaster" {
		return ErrUnknownRecipient
	}
	t.rcpts = append(t.rcpts, rcpt)
	return nil
}

func (t *memTx) Body(ctx context.Context, msg io.ReaderAt, size int64) error {
	if t.b.failBody != nil {
		return t.b.failBody
	}
	buf := make([]byte, size)
	if _, err := msg.ReadAt(buf, 0); err != nil && err != io.EOF {
		return err
	}
	t.data = string(buf)
	return nil
}

func (t *memTx) Commit(ctx context.Context) error {
	t.b.mu.Lock()
	defer t.b.mu.Unlock()
	t.end()
	t.b.delivered = append(t.b.delivered, memMessage{From: t.from, Rcpts: t.rcpts, Data: t.data})
	return nil
}

func (t *memTx) Abort() {
	t.b.mu.Lock()
	defer t.b.mu.Unlock()
	t.end()
	t.b.aborted++
}

// end panics on a second end: the session must end a transaction once.
func (t *memTx) end() {
	if t.ended {
		panic("transaction ended twice")
	}
	t.ended = true
	t.b.open--
}

func (b *memBackend) snapshot() (delivered []memMessage, aborted, open int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]memMessage(nil), b.delivered...), b.aborted, b.open
}
