// Package smtpd is agua's SMTP server: RFC 5321 with SIZE (RFC 1870),
// PIPELINING (RFC 2920), STARTTLS (RFC 3207), AUTH PLAIN and LOGIN
// (RFC 4954, RFC 4616), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531) and
// ENHANCEDSTATUSCODES (RFC 2034, RFC 3463), in three modes: MX (port 25),
// submission with STARTTLS (RFC 6409, port 587) and submission over implicit
// TLS (RFC 8314, port 465).
//
// It is written here rather than on emersion/go-smtp because the shield needs
// hooks that library does not expose: a pre-greeting pause that detects
// clients speaking before the banner, counting of unknown commands and syntax
// errors towards a 421 and a ban, closing on HTTP verbs, ending a session when
// the shield bans its address mid-session, and per-account auth delays. Each
// would have required forking its connection loop.
//
// The package knows nothing of accounts or storage: it calls a Backend, whose
// errors may carry exact replies (*Error).
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode selects the listener's role.
type Mode int

const (
	ModeMX          Mode = iota // inbound mail for local domains; no AUTH
	ModeSubmission              // STARTTLS; AUTH required before MAIL
	ModeSubmissions             // implicit TLS; AUTH required before MAIL
)

func (m Mode) String() string {
	switch m {
	case ModeMX:
		return "smtp"
	case ModeSubmission:
		return "submission"
	case ModeSubmissions:
		return "submissions"
	}
	return "unknown"
}

// Config holds the limits of one server. Zero values are replaced by safe
// defaults in NewServer; none of them means "unlimited".
type Config struct {
	Hostname                  string
	TLS                       *tls.Config // nil: no STARTTLS; required for ModeSubmissions
	MaxMessageSize            int64
	MaxRecipients             int
	MaxCommandLength          int
	MaxLineLength             int
	CommandTimeout            time.Duration
	DataTimeout               time.Duration
	SessionTimeout            time.Duration
	MaxErrors                 int
	BannerDelay               time.Duration // MX only
	AuthFailureDelay          time.Duration
	AllowInsecureAuthLoopback bool
	SpoolDir                  string // where messages larger than the memory threshold are buffered; "" = os.TempDir()
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
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 25 << 20
	}
	def(&c.MaxRecipients, 100)
	def(&c.MaxCommandLength, 2048)
	def(&c.MaxLineLength, 8192)
	def(&c.MaxErrors, 10)
	defD(&c.CommandTimeout, 5*time.Minute)
	defD(&c.DataTimeout, 5*time.Minute)
	defD(&c.SessionTimeout, 30*time.Minute)
	if c.AuthFailureDelay < 0 {
		c.AuthFailureDelay = 0
	}
}

// Session describes a session to the Backend.
type Session struct {
	ID         string
	Mode       Mode
	RemoteAddr net.Addr
	Helo       string
	TLS        bool
	User       string // authenticated user, "" if none
}

// Envelope is one accepted transaction.
type Envelope struct {
	From       string // "" for the null reverse-path
	Recipients []string
	SMTPUTF8   bool
}

// Backend is what a session needs from the rest of the mail system. Errors
// of type *Error are sent as they are; others become 451 4.3.0.
type Backend interface {
	// Authenticate checks credentials and returns the canonical user name.
	Authenticate(ctx context.Context, s *Session, user, password string) (string, error)
	// CheckSender vets MAIL FROM (e.g. that an authenticated user owns it).
	CheckSender(ctx context.Context, s *Session, from string) error
	// CheckRecipient vets one RCPT TO (local user, relay policy, quota).
	CheckRecipient(ctx context.Context, s *Session, env *Envelope, rcpt string) error
	// Deliver stores the message durably for every recipient, or fails for
	// all of them. It returns only once the message is safe on disk.
	Deliver(ctx context.Context, s *Session, env *Envelope, msg io.ReaderAt, size int64) error
}

// Hooks let the embedding service observe and steer sessions without the
// package depending on it. All fields are optional.
type Hooks struct {
	// AccountDelay returns an extra delay before answering an auth attempt
	// for account (per-account brute-force protection).
	AccountDelay func(account string) time.Duration
	// Delivered is called after a message is accepted; took is the time
	// the backend needed to make it durable.
	Delivered func(s *Session, env *Envelope, size int64, took time.Duration)
	// Refused is called when a message is refused after DATA.
	Refused func(s *Session, code int)
	// Auth is called after each authentication attempt.
	Auth func(s *Session, ok bool)
}

// Server serves SMTP on any number of listeners.
type Server struct {
	cfg     Config
	mode    Mode
	backend Backend
	hooks   Hooks
	log     *slog.Logger

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	idle     map[*session]struct{} // sessions waiting for a command
	closing  atomic.Bool
	wg       sync.WaitGroup
	nextID   atomic.Uint64
	panics   atomic.Uint64
	sessions atomic.Int64
}

// NewServer returns a server for one mode.
func NewServer(mode Mode, cfg Config, backend Backend, hooks Hooks, log *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if mode == ModeSubmissions && cfg.TLS == nil {
		return nil, errors.New("smtpd: implicit TLS submission needs a TLS config")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Server{cfg: cfg, mode: mode, backend: backend, hooks: hooks, log: log, conns: map[net.Conn]struct{}{}, idle: map[*session]struct{}{}}, nil
}

// Serve accepts connections until the listener is closed. For
// ModeSubmissions, pass the plain listener: Serve wraps each connection in
// TLS itself so the handshake runs in the session goroutine, under its
// deadlines, and never blocks Accept.
func (s *Server) Serve(ln net.Listener) error {
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			// EMFILE and friends: back off rather than spin.
			tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
			s.log.Warn("smtp accept failed", "err", err)
			time.Sleep(tempDelay)
			continue
		}
		tempDelay = 0
		if !s.track(c, true) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.serveConn(c)
		}()
	}
}

func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing.Load() {
			return false
		}
		s.conns[c] = struct{}{}
		s.sessions.Add(1)
	} else {
		delete(s.conns, c)
		s.sessions.Add(-1)
	}
	return true
}

// Shutdown stops new sessions and ends running ones cleanly: a session
// waiting for a command is answered 421 4.3.2 at once (RFC 5321 3.8); one
// in the middle of a transaction finishes it, then gets the 421. When ctx
// ends first, whatever is left is closed. Listeners are closed by their
// owner.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	// Wake idle sessions by expiring their read deadline. Repeated, because
	// a session may set a fresh deadline just after one wake-up.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for ss := range s.idle {
			ss.conn.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		select {
		case <-done:
			return nil
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// setIdle records whether a session waits for a command.
func (s *Server) setIdle(ss *session, idle bool) {
	s.mu.Lock()
	if idle {
		s.idle[ss] = struct{}{}
	} else {
		delete(s.idle, ss)
	}
	s.mu.Unlock()
}

// Sessions returns the number of sessions running now.
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// Panics returns how many sessions ended in a recovered panic.
func (s *Server) Panics() uint64 { return s.panics.Load() }
