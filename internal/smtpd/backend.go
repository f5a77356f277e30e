package smtpd

import (
	"context"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/agua-mail/agua/shield"
)

// Session describes a session to the Backend. A transaction gets it at
// MAIL FROM, so checks that depend on the client (SPF on the client address,
// HELO and MAIL FROM, RFC 7208 2.3 and 2.4) can run there.
type Session struct {
	ID         string
	Mode       Mode
	RemoteAddr net.Addr
	Helo       string
	TLS        bool
	User       string // authenticated user, "" if none
	// Trusted is set at MAIL FROM when the client is allowlisted in the
	// shield (a relay of this site): the backend skips its sender
	// authentication checks.
	Trusted bool
	// KnownGood is set at MAIL FROM when the shield knows the client as
	// good (accepted mail before, a DNSWL hit): the backend does not
	// greylist it.
	KnownGood bool
}

// Envelope is the part of a transaction the session itself keeps: what it
// needs for its own replies, its Received field and its hooks. The backend
// keeps its own per-recipient state in its Transaction.
type Envelope struct {
	From       string // "" for the null reverse-path
	Recipients []string
	SMTPUTF8   bool
}

// Mail is what MAIL FROM declared (RFC 5321 4.1.1.2).
type Mail struct {
	From     string // "" for the null reverse-path
	SMTPUTF8 bool   // RFC 6531 3.4
	Size     int64  // the SIZE parameter (RFC 1870), 0 if not given
}

// Backend is what a session needs from the rest of the mail system. The
// package owns this interface; internal/router implements it.
//
// Errors that decide what the session does are the sentinels below (match
// them with errors.Is); any *Error is sent as its reply; any other error
// becomes 451 4.3.0 with its text kept out of the reply and logged.
type Backend interface {
	// Authenticate checks credentials and returns the canonical user name.
	// Refused credentials return ErrAuthFailed (or any error that is not a
	// temporary *Error): the session then waits its failure delay and
	// answers 535. A temporary *Error (e.g. ErrTempAuth) is sent as it is,
	// without the delay.
	Authenticate(ctx context.Context, s *Session, user, password string) (string, error)
	// NewTransaction starts a mail transaction at MAIL FROM and vets the
	// sender (on submission, that the user owns the address: RFC 6409 6.1;
	// later SPF at this point). An error refuses MAIL FROM and no
	// transaction exists.
	NewTransaction(ctx context.Context, s *Session, mail Mail) (Transaction, error)
}

// Transaction is one mail transaction (RFC 5321 3.3), from MAIL FROM to the
// end of DATA, RSET, a new EHLO/HELO or the end of the session. The session
// calls AddRcpt for each RCPT TO, then Body and Commit once the data has
// arrived, or Abort at any point before Commit has returned nil. Exactly one
// of Commit (successful) or Abort ends it; after a failed Body or Commit the
// session calls Abort.
type Transaction interface {
	// AddRcpt vets one recipient and remembers it. ErrUnknownRecipient
	// marks an address that does not exist (the shield counts those as
	// harvesting); other errors are refusals with their own reply.
	AddRcpt(ctx context.Context, rcpt string) error
	// Body receives the message as received, the session's Received field
	// first. msg stays readable until Commit or Abort returns. This is where
	// checks of the content belong (DKIM verification at the end of DATA).
	Body(ctx context.Context, msg io.ReaderAt, size int64) error
	// Commit makes the message durable for every accepted recipient, or
	// fails for all of them. It returns only once the message is safe: the
	// session answers 250 after it.
	Commit(ctx context.Context) error
	// Abort ends the transaction without delivering anything.
	Abort()
}

// Observer is an optional interface of a Transaction that saw behaviour of
// the client the shield should count (a message failing DMARC). After the
// message is answered, accepted or refused, the session reports each
// event as it reports its own (unknown recipients), and ends the session
// if the shield says so.
type Observer interface {
	Observed() []shield.Event
}

// Hooks let the embedding service observe and steer sessions without the
// package depending on it. All fields are optional.
type Hooks struct {
	// AccountDelay returns an extra delay before answering a failed login
	// on account from the client address addr (the shield's per-account
	// protection, Shield.AccountDelayFrom: the account's owner networks
	// never wait).
	AccountDelay func(account string, addr netip.Addr) time.Duration
	// Delivered is called after a message is accepted; took is the time
	// the backend needed to make it durable.
	Delivered func(s *Session, env *Envelope, size int64, took time.Duration)
	// Refused is called when a message is refused after DATA.
	Refused func(s *Session, code int)
	// Auth is called after each authentication attempt.
	Auth func(s *Session, ok bool)
	// CommitSlot waits for the session's turn to make a received message
	// durable (Commit; Body runs before, outside the turn) and returns the
	// function that ends the turn: a fair queue across clients
	// (shield.Gate), so a flood of messages from a few networks cannot push
	// everyone else's delivery behind it. An error is answered 451 4.3.0.
	CommitSlot func(ctx context.Context, c net.Conn) (release func(), err error)
	// Screen is called on MX listeners as a session starts, before the
	// banner delay: it starts whatever checks of the client run in the
	// background (DNS blocklists) and returns the function that, after the
	// banner delay, waits for them within its own budget and says what
	// to do with the client.
	Screen func(c net.Conn) (wait func(ctx context.Context) Screening)
}

// MaxTarpit bounds Screening's delays.
const (
	MaxTarpitGreeting = 5 * time.Minute // RFC 5321 4.5.3.2.1: clients wait 5 minutes for the greeting
	MaxTarpitReply    = time.Minute
)

// Screening is a Screen's decision on a client.
type Screening struct {
	// Refuse, when not nil, is sent instead of the greeting and the
	// session ends.
	Refuse *Error
	// Greeting and Reply tarpit the client: the greeting is sent that
	// much later, and every reply after it that much after the command
	// (bounded by MaxTarpitGreeting and MaxTarpitReply). The waits run in
	// the session's own goroutine and end early at shutdown or a shield
	// kick; no goroutine or timer outlives the session.
	Greeting, Reply time.Duration
}
