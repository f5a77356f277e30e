// Package pop3d is agua's POP3 server: RFC 1939 (USER/PASS, STAT, LIST,
// RETR, DELE, NOOP, RSET, QUIT, UIDL, TOP; not APOP), RFC 2449 (CAPA,
// RESP-CODES, PIPELINING), RFC 3206 response codes ([AUTH], [SYS/TEMP],
// [SYS/PERM], [IN-USE]), RFC 2595 (STLS), RFC 5034 (AUTH PLAIN, RFC 4616,
// with AUTH-RESP-CODE) and implicit TLS (RFC 8314, port 995).
//
// It is written here because no Go library exists and because the shield
// needs the same hooks as in smtpd: counting protocol errors towards a ban,
// closing on HTTP verbs, reporting every login to the shield, ending a
// session the shield wants gone, and per-account delays after failed
// logins.
//
// Maildrop semantics (RFC 1939): after login the session holds the
// maildrop lock (a second session gets -ERR [IN-USE]), the message list is
// fixed for the whole session, DELE only marks, and messages are deleted
// only when the client says QUIT (the UPDATE state): a dropped connection
// changes nothing. Mail delivered during a session shows in the next one.
//
// Sessions call a Backend, whose errors may carry exact replies (*Error).
// NewBackend (maildrop.go) is agua's: an accounts.Lookup for logins and
// the INBOX of a mailstore.Store as the maildrop; the package names no
// storage backend's types.
package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"github.com/agua-mail/agua/internal/connsrv"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Config holds the limits of one server. Zero values are replaced by safe
// defaults in NewServer; none of them means "unlimited".
type Config struct {
	Hostname string
	// TLS enables STLS, or is used for every connection when ImplicitTLS
	// is set. nil: no STLS.
	TLS         *tls.Config
	ImplicitTLS bool // POP3S (RFC 8314): the TLS handshake runs first, in the session goroutine
	// PreAuthTimeout bounds each command before login, IdleTimeout each
	// command after (RFC 1939 3: an autologout timer of at least 10
	// minutes), SessionTimeout the whole session.
	PreAuthTimeout time.Duration
	IdleTimeout    time.Duration
	SessionTimeout time.Duration
	// MaxLineLength is the longest command line, CRLF included (RFC 2449
	// 4: 255 octets for commands; AUTH responses are longer).
	MaxLineLength int
	// MaxErrors protocol errors and failed logins end the session.
	MaxErrors int
	// AuthFailureDelay is waited before answering a failed login, on top
	// of Hooks.AccountDelay.
	AuthFailureDelay time.Duration
	// AllowInsecureAuthLoopback allows USER/PASS and AUTH without TLS for
	// clients on loopback addresses. Elsewhere they need TLS (RFC 2595 2.2).
	AllowInsecureAuthLoopback bool
}

func (c *Config) setDefaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	defD(&c.PreAuthTimeout, 30*time.Second)
	defD(&c.IdleTimeout, 10*time.Minute)
	defD(&c.SessionTimeout, time.Hour)
	def(&c.MaxLineLength, 1024)
	if c.MaxLineLength < 255 {
		c.MaxLineLength = 255
	}
	def(&c.MaxErrors, 10)
	if c.AuthFailureDelay < 0 {
		c.AuthFailureDelay = 0
	}
}

// Session describes a session to the Backend.
type Session struct {
	ID         string
	Listener   string // "pop3" or "pop3s"
	RemoteAddr net.Addr
	TLS        bool
	User       string // authenticated user, "" before login
}

// Message is one message of a maildrop as the client sees it.
type Message struct {
	UIDL string // unique id, stable across sessions (RFC 1939 7: 1 to 70 characters 0x21-0x7E)
	Size int64  // octets
}

// Maildrop is a locked mailbox for one session. Message numbers passed to
// it are 0-based indexes into Messages.
type Maildrop interface {
	// Messages is the message list, fixed for the session.
	Messages() []Message
	// Open returns message i for reading.
	Open(i int) (io.ReadCloser, error)
	// Update is the UPDATE state (RFC 1939 6), entered only on QUIT:
	// delete the messages marked deleted and record those retrieved as
	// read.
	Update(deleted, retrieved []int) error
	// Close releases the maildrop lock; it changes nothing.
	Close() error
}

// Backend is what a session needs from the rest of the mail system.
// Errors of type *Error are sent as they are; others become
// -ERR [SYS/TEMP].
type Backend interface {
	// Authenticate checks credentials and returns the canonical user name.
	// A temporary failure is an *Error with Code "SYS/TEMP"; any other
	// error means the credentials were refused.
	Authenticate(ctx context.Context, s *Session, user, password string) (string, error)
	// OpenMaildrop locks and lists user's maildrop; ErrInUse when another
	// session holds it.
	OpenMaildrop(ctx context.Context, s *Session, user string) (Maildrop, error)
}

// Hooks let the embedding service steer sessions without the package
// depending on it. All fields are optional.
type Hooks struct {
	// AccountDelay returns an extra delay before answering a failed login
	// on account from the client address addr (the shield's per-account
	// protection, Shield.AccountDelayFrom: the account's owner networks
	// never wait).
	AccountDelay func(account string, addr netip.Addr) time.Duration
	// Auth is called after every credential check that got an answer
	// (not after temporary failures), for metrics.
	Auth func(s *Session, ok bool)
}

// Server serves POP3 on any number of listeners.
type Server struct {
	cfg     Config
	name    string
	backend Backend
	hooks   Hooks
	log     *slog.Logger

	*connsrv.Tracker // accept loop, sessions, graceful shutdown
}

// NewServer returns a server; ImplicitTLS needs a TLS config.
func NewServer(cfg Config, backend Backend, hooks Hooks, log *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if cfg.ImplicitTLS && cfg.TLS == nil {
		return nil, errors.New("pop3d: implicit TLS needs a TLS config")
	}
	if log == nil {
		log = slog.Default()
	}
	name := "pop3"
	if cfg.ImplicitTLS {
		name = "pop3s"
	}
	return &Server{cfg: cfg, name: name, backend: backend, hooks: hooks, log: log, Tracker: connsrv.New(name, log)}, nil
}

// Name returns "pop3" or "pop3s".
func (s *Server) Name() string { return s.name }

// Serve accepts connections until the listener is closed. With
// ImplicitTLS, pass the plain listener: each connection's handshake runs in
// its session goroutine, under its deadlines, and never blocks Accept.
func (s *Server) Serve(ln net.Listener) error { return s.Tracker.Serve(ln, s.serveConn) }
