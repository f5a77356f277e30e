// Package queue holds mail waiting for delivery to other servers: a durable
// queue with per-recipient state, and its contract (Queue) that every
// implementation meets, checked by the conformance suite in queuetest.
//
// The embedded implementation (Open) keeps one file per message in
// <data>/queue/msg: the envelope and the message bytes, written once, and
// beside it a small state file replaced atomically when a delivery attempt
// ends. A message is acknowledged (Enqueue returns, the SMTP server may say
// 250, RFC 5321 6.1) only once its file and directory entry are on disk;
// concurrent enqueues share one flush (group commit). A message is kept
// until every recipient is delivered or bounced.
//
// Delivery is at least once: an attempt whose outcome was not yet recorded
// when the process died is made again after a restart, so the window for a
// duplicate is the time between the remote server's 250 after DATA and the
// state file reaching the disk (one fsync).
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Errors that decide behaviour.
var (
	ErrNotFound = errors.New("queue: no such message")
	ErrClosed   = errors.New("queue: closed")
	// ErrLocked: another process (the running server) has the queue open.
	ErrLocked = errors.New("queue: in use by another process")
	// ErrBadID: an ID that cannot name a queued message (an operator's
	// typing, or an attempt at a path).
	ErrBadID = errors.New("queue: malformed message ID")
	// ErrNotClaimed: an Update for recipients that were not claimed.
	ErrNotClaimed = errors.New("queue: recipient not claimed")
)

// Envelope is the SMTP envelope of a queued message (RFC 5321 2.3.1).
type Envelope struct {
	From     string    `json:"from"`               // reverse path; "" is the null sender
	To       []string  `json:"to"`                 // forward paths
	UTF8     bool      `json:"smtputf8,omitempty"` // MAIL FROM carried SMTPUTF8 (RFC 6531)
	EightBit bool      `json:"8bit,omitempty"`     // BODY=8BITMIME (RFC 6152)
	Account  string    `json:"account,omitempty"`  // the authenticated submitter, if any
	Received time.Time `json:"received"`           // when it was accepted
}

// Status is where one recipient stands.
type Status uint8

const (
	Pending   Status = iota // not tried yet
	Deferred                // tried, failed temporarily; tried again at Next
	Delivered               // accepted by the next hop
	Bounced                 // failed for good; a DSN was (or will be) sent
)

var statusNames = [...]string{"pending", "deferred", "delivered", "bounced"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// MarshalText writes the status by name (state files, the admin API).
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a status name.
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if string(b) == n {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("queue: unknown status %q", b)
}

// Final reports whether nothing more will be tried for the recipient.
func (s Status) Final() bool { return s == Delivered || s == Bounced }

// Recipient is the state of one recipient of a queued message.
type Recipient struct {
	Addr     string    `json:"addr"`
	Status   Status    `json:"status"`
	Attempts int       `json:"attempts,omitempty"`
	Next     time.Time `json:"next,omitzero"`    // next attempt (Deferred)
	Reply    string    `json:"reply,omitempty"`  // the last reply or error
	Updated  time.Time `json:"updated,omitzero"` // when the state last changed
}

// Message is a queued message without its bytes.
type Message struct {
	ID       string   `json:"id"`
	Envelope Envelope `json:"envelope"`
	Size     int64    `json:"size"` // of the message bytes
	Held     bool     `json:"held"`
	// DelayNotified: the sender was told of the delay (RFC 3464
	// Action: delayed); it is told once per message.
	DelayNotified bool        `json:"delay_notified,omitempty"`
	Rcpts         []Recipient `json:"rcpts"`
}

// Job is a claim on some recipients of one message: the delivery that
// claimed them owns them until it calls Update.
type Job struct {
	ID       string
	Envelope Envelope
	Size     int64
	Rcpts    []Recipient // the claimed ones, with their state so far
	// DelayNotified: a delay notice for the message was already sent.
	DelayNotified bool
}

// Result is the outcome of one delivery attempt for one recipient.
type Result struct {
	Rcpt   string
	Status Status    // Delivered, Bounced or Deferred
	Reply  string    // the remote reply or the error, for the log and the DSN
	Next   time.Time // when Deferred: the next attempt
	// DelayNotified records that a delay notice for the message went out
	// with this attempt (Message.DelayNotified from then on).
	DelayNotified bool
}

// Stats are the figures of the queue.
type Stats struct {
	Messages   int            `json:"messages"`
	Recipients int            `json:"recipients"` // not yet final
	Held       int            `json:"held"`       // messages
	Deferred   int            `json:"deferred"`   // recipients
	Bytes      int64          `json:"bytes"`
	Oldest     time.Time      `json:"oldest,omitzero"` // Received of the oldest message
	ByDomain   map[string]int `json:"by_domain"`       // waiting recipients per domain
}

// Tx is an enqueue in progress: the message is written but not yet part
// of the queue. Commit makes it durable and visible; Abort drops it. The
// router uses it to make local delivery and queueing one transaction.
type Tx interface {
	Commit(ctx context.Context) (id string, err error)
	Abort()
}

// Queue is the contract of a mail queue. Its consumers (the router that
// enqueues, the delivery engine that claims, the operator's commands)
// each need part of it; every implementation provides all of it and
// passes queuetest.Run.
type Queue interface {
	// Begin writes the message (body read to EOF, bytes as they will be
	// sent: already signed) without making it visible.
	Begin(ctx context.Context, env Envelope, body io.Reader) (Tx, error)
	// Enqueue is Begin and Commit: it returns once the message is durable.
	Enqueue(ctx context.Context, env Envelope, body io.Reader) (string, error)

	// Claim returns up to max jobs with recipients that are due at now
	// (pending, or deferred with Next not after now), not held and not
	// claimed by another job, oldest first.
	Claim(now time.Time, max int) ([]Job, error)
	// Open returns the message bytes.
	Open(id string) (io.ReadCloser, error)
	// Update records the outcome for claimed recipients and releases
	// them; recipients of the job without a result are released
	// unchanged. A message whose recipients are all final is removed.
	// It returns once the new state is durable.
	Update(ctx context.Context, id string, results []Result) error
	// Unclaim gives claimed recipients back unchanged (shutdown).
	Unclaim(id string, rcpts []string)
	// Wake signals when something may have become due (an enqueue, a
	// retry, a release, an unclaim); consumers still poll for deferred recipients.
	Wake() <-chan struct{}

	List() ([]Message, error)
	Get(id string) (Message, error)
	// Hold keeps a message from being claimed until Release.
	Hold(id string) error
	Release(id string) error
	// Retry makes the deferred recipients of id due at now.
	Retry(id string, now time.Time) error
	// Delete removes a message at once; claimed recipients' outcomes are
	// then ignored.
	Delete(id string) error
	Stats() Stats
	Close() error
}
