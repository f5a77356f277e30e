// Package imapd is agua's IMAP server: IMAP4rev1 (RFC 3501) and IMAP4rev2
// (RFC 9051) over the same Maildirs SMTP delivers to and POP3 reads, with
// IDLE (RFC 2177), UIDPLUS (RFC 4315), MOVE (RFC 6851), LITERAL+ (RFC 7888),
// NAMESPACE (RFC 2342), SPECIAL-USE (RFC 6154), ENABLE (RFC 5161),
// UNSELECT (RFC 3691), CHILDREN (RFC 3348), ESEARCH (RFC 4731), LIST-EXTENDED
// (RFC 5258), LIST-STATUS (RFC 5819), STATUS=SIZE (RFC 8438), APPENDLIMIT
// (RFC 7889), STARTTLS (RFC 3501 6.2.1) and implicit TLS (RFC 8314).
//
// The protocol engine is github.com/emersion/go-imap/v2's imapserver; this
// package is the session backend (session.go, fetch.go) and the layer
// between the engine and the client (conn.go, frame.go). The engine has no
// hooks for the shield, so each connection gets its own imapserver.Server,
// which makes per-connection decisions possible with the engine as it is:
//
//   - whether logins are allowed without TLS (Options.InsecureAuth: only
//     for loopback clients when AllowInsecureAuthLoopback is set, so others
//     see LOGINDISABLED until STARTTLS, RFC 3501 6.2.3);
//   - a logger that knows the connection, so a command line the engine
//     cannot parse (it closes the connection) is reported to the shield,
//     and an error of the client's that the engine would answer as its own
//     ([SERVERBUG]) is answered BAD;
//   - the connection it reads and writes, which is ours (engineConn): it
//     frames the client's bytes, literals included, before the engine
//     sees them (frame.go: a refused literal is never read as commands),
//     does STARTTLS itself (so it always sees plaintext; the session then
//     goes on with a second engine that allows logins), reads the replies
//     so that every BAD counts as a protocol error towards the shield and
//     Config.MaxErrors, applies agua's timeouts in place of the engine's
//     fixed ones (30 s / 35 min) and says "* BYE" before closing a session
//     the shield, a timeout or a shutdown ends.
//
// Logins are reported from Session.Login (LOGIN and AUTHENTICATE PLAIN).
// The engine has no QUOTA (RFC 9208), ID (RFC 2971) or CONDSTORE
// (RFC 7162) commands, so they are not offered.
//
// Storage: the package talks to a mailstore.Store (the mail-store contract
// it shares with pop3d; maildir.Store.MailStore implements it) and an
// Authenticator (NewAuthenticator adapts an accounts.Lookup). Mailbox names
// are folder names with "." as the hierarchy delimiter (names.go validates
// them so that no name reaches outside the user's Maildir). UIDs and
// UIDVALIDITY are the store's, shared with POP3; flags are the store's
// letters: \Seen S, \Answered R, \Flagged F, \Deleted T, \Draft D.
// Keywords are not kept.
package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/agua-mail/agua/internal/connsrv"
	"github.com/agua-mail/agua/internal/mailstore"
)

// Config holds the limits of one server. Zero values are replaced by safe
// defaults in NewServer; none of them means "unlimited".
type Config struct {
	Hostname string
	// TLS enables STARTTLS, or is used for every connection when
	// ImplicitTLS is set.
	TLS         *tls.Config
	ImplicitTLS bool
	// PreAuthTimeout bounds each command before login; IdleTimeout each
	// command after, and an IDLE (RFC 3501 5.4: at least 30 minutes);
	// SessionTimeout the whole connection.
	PreAuthTimeout time.Duration
	IdleTimeout    time.Duration
	SessionTimeout time.Duration
	// MaxErrors BAD replies and failed logins end the session.
	MaxErrors int
	// AuthFailureDelay is waited before answering a failed login, on top
	// of Hooks.AccountDelay.
	AuthFailureDelay time.Duration
	// AllowInsecureAuthLoopback allows LOGIN and AUTHENTICATE without TLS
	// for clients on loopback addresses.
	AllowInsecureAuthLoopback bool
	// MaxMessageSize is the largest APPEND (announced as APPENDLIMIT).
	MaxMessageSize int64
	// IdlePoll is how often an IDLE session looks for changes.
	IdlePoll time.Duration
	// DefaultFolders are created at a user's first login, with their
	// SPECIAL-USE attribute where the name is a known one.
	DefaultFolders []string
}

func (c *Config) setDefaults() {
	defD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	defD(&c.PreAuthTimeout, 30*time.Second)
	defD(&c.IdleTimeout, 30*time.Minute)
	defD(&c.SessionTimeout, 24*time.Hour)
	defD(&c.IdlePoll, time.Second)
	if c.MaxErrors <= 0 {
		c.MaxErrors = 10
	}
	if c.AuthFailureDelay < 0 {
		c.AuthFailureDelay = 0
	}
	if c.MaxMessageSize <= 0 || c.MaxMessageSize > 1<<32-1 {
		c.MaxMessageSize = 25 << 20
	}
	if c.DefaultFolders == nil {
		c.DefaultFolders = []string{"Sent", "Drafts", "Trash", "Junk"}
	}
}

// ErrAuthFailed is returned by an Authenticator for wrong credentials;
// any other error is a temporary failure.
var ErrAuthFailed = errors.New("imapd: authentication failed")

// Authenticator checks credentials.
type Authenticator interface {
	// Authenticate returns the canonical user (the mailbox name) and its
	// quota in bytes.
	Authenticate(ctx context.Context, user, password string) (canonical string, quota int64, err error)
}

// Hooks let the embedding service steer sessions. All are optional.
type Hooks struct {
	// AccountDelay returns an extra delay before answering a failed login
	// on account from the client address addr (the shield's per-account
	// protection, Shield.AccountDelayFrom: the account's owner networks
	// never wait).
	AccountDelay func(account string, addr netip.Addr) time.Duration
	// Auth is told about every login attempt (metrics).
	Auth func(ok bool)
}

// Server serves IMAP on any number of listeners.
type Server struct {
	cfg   Config
	name  string
	auth  Authenticator
	store mailstore.Store
	hooks Hooks
	log   *slog.Logger
	caps  imap.CapSet

	*connsrv.Tracker // accept loop, sessions, shutdown
}

// NewServer returns a server; ImplicitTLS needs a TLS config.
func NewServer(cfg Config, auth Authenticator, store mailstore.Store, hooks Hooks, log *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if cfg.ImplicitTLS && cfg.TLS == nil {
		return nil, errors.New("imapd: implicit TLS needs a TLS config")
	}
	if log == nil {
		log = slog.Default()
	}
	name := "imap"
	if cfg.ImplicitTLS {
		name = "imaps"
	}
	caps := imap.CapSet{}
	for _, c := range []imap.Cap{
		imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapNamespace, imap.CapUIDPlus,
		imap.CapMove, imap.CapSpecialUse, imap.CapLiteralPlus, imap.CapChildren,
		imap.CapESearch, imap.CapListExtended, imap.CapListStatus, imap.CapStatusSize,
	} {
		caps[c] = struct{}{}
	}
	return &Server{cfg: cfg, name: name, auth: auth, store: store, hooks: hooks, log: log, caps: caps,
		Tracker: connsrv.New(name, log)}, nil
}

// Name returns "imap" or "imaps".
func (s *Server) Name() string { return s.name }

// Serve accepts connections until the listener is closed. With
// ImplicitTLS, pass the plain listener: each handshake runs in its
// session's goroutine, under the pre-login timeout.
//
// Shutdown (connsrv.Tracker's) ends every session with "* BYE" at its next
// reply boundary (IMAP clients reconnect on their own; nothing is lost, as
// every change is on disk when its command completes), and waits for the
// sessions to end until its context does.
func (s *Server) Serve(ln net.Listener) error { return s.Tracker.Serve(ln, s.serveConn) }

func (s *Server) serveConn(raw net.Conn) {
	fr := s.Open(raw, "imap", s.cfg.SessionTimeout)
	defer fr.End()
	defer raw.Close()

	var c net.Conn = raw
	isTLS := false
	if s.cfg.ImplicitTLS {
		tc, err := fr.Handshake(raw, s.cfg.TLS, s.cfg.PreAuthTimeout)
		if err != nil {
			return
		}
		c, isTLS = tc, true
	}
	w := newWatchConn(c, raw, s, fr, isTLS)
	s.OnShutdown(raw, func() { w.bye("Server shutting down") })
	if s.Closing() {
		return
	}
	// The shield may want this connection gone mid-session (newly denied
	// address, ban, lockdown, eviction). It closes the socket itself, right
	// after Done: a BYE written now would race that close (and reach the
	// client or not), so the session ends without a word, as SMTP's and
	// POP3's do.
	fr.WatchShield(func() {
		w.ended.Store(true)
		w.Close()
	})
	log := fr.Log
	log.Debug("imap session start", "tls", isTLS)
	// One engine until STARTTLS, another after it (frame.go does the
	// handshake below the engine, so the engine never sees a TLS
	// connection and decides from its options whether to allow logins).
	for greeted := false; ; greeted = true {
		ec := &engineConn{watchConn: w, greeted: greeted, done: make(chan struct{})}
		sess := s.runEngine(fr.Ctx, ec, log)
		if !ec.handover {
			log.Debug("imap session end", "user", sess.user, "errors", w.errors.Load())
			return
		}
	}
}

// runEngine serves the connection with one engine instance until it ends.
func (s *Server) runEngine(ctx context.Context, ec *engineConn, log *slog.Logger) *session {
	w := ec.watchConn
	sess := &session{srv: s, conn: w, log: log, ctx: ctx, closed: make(chan struct{})}
	secure := w.secure.Load()
	var tlsCfg *tls.Config
	if !secure {
		tlsCfg = s.cfg.TLS // offers STARTTLS; frame.go answers it
	}
	engine := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return sess, nil, nil
		},
		Caps:         s.caps,
		Logger:       &engineLogger{w: w, log: log, srv: s},
		TLSConfig:    tlsCfg,
		InsecureAuth: secure || s.cfg.AllowInsecureAuthLoopback && connsrv.IsLoopback(w.raw.RemoteAddr()),
	})
	engine.Serve(&oneConnListener{c: ec})
	// Serve returns once the connection is closed; the engine's goroutine
	// then calls Session.Close.
	<-sess.closed
	return sess
}

// oneConnListener hands the engine one connection, then blocks until that
// connection is closed.
type oneConnListener struct {
	c    *engineConn
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var first bool
	l.once.Do(func() { first = true })
	if first {
		return l.c, nil
	}
	<-l.c.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }
