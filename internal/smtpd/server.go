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
// The package knows nothing of accounts or storage: it calls a Backend, which
// starts one Transaction per MAIL FROM (see backend.go); errors may carry
// exact replies (*Error), and the ones that steer the session are sentinels
// (ErrUnknownRecipient, ErrAuthFailed) matched with errors.Is.
package smtpd

import (
	"crypto/tls"
	"errors"
	"github.com/agua-mail/agua/internal/connsrv"
	"log/slog"
	"net"
	"strconv"
	"sync"
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

// Server serves SMTP on any number of listeners.
type Server struct {
	cfg     Config
	mode    Mode
	backend Backend
	hooks   Hooks
	log     *slog.Logger

	// extensions are the EHLO keywords every session offers (RFC 5321
	// 4.1.1.1); STARTTLS and AUTH are added per session.
	extensions []string

	usersMu sync.Mutex
	users   map[string]map[*session]struct{} // open authenticated sessions by user (EndSessions)

	*connsrv.Tracker // accept loop, sessions, graceful shutdown
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
	exts := []string{"PIPELINING", "SIZE " + strconv.FormatInt(cfg.MaxMessageSize, 10), "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"}
	return &Server{cfg: cfg, mode: mode, backend: backend, hooks: hooks, log: log, extensions: exts, Tracker: connsrv.New(mode.String(), log)}, nil
}

// Serve accepts connections until the listener is closed. For
// ModeSubmissions, pass the plain listener: Serve wraps each connection in
// TLS itself so the handshake runs in the session goroutine, under its
// deadlines, and never blocks Accept.
func (s *Server) Serve(ln net.Listener) error { return s.Tracker.Serve(ln, s.serveConn) }
