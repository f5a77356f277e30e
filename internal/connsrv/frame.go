package connsrv

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agua-mail/agua/shield"
)

// Frame is what every session shares, whatever its protocol (SMTP, POP3,
// IMAP): a connection id, a logger that carries it, a context, the
// whole-session deadline, the panic guard, the shield watch, the TLS
// handshake and the failed-login delay. One copy, because three copies of
// it drifted into three bugs (a panic reply never flushed, a login delay
// that shutdown could not cut short, a shield kick that left the session
// context running).
//
// Log vocabulary: the frame's events are logged with the same message in
// every protocol, which is an attribute of the logger ("proto"), so that
// operators can grep and alert on one line:
//
//	msg="auth failed" proto=pop3 user=...
//	msg="session closed by shield" proto=smtp
//	msg="session panic" proto=imap panic=... stack=...
//	msg="tls handshake failed" proto=smtp err=...
//	msg="timeout" proto=pop3 session=false
type Frame struct {
	ID       string
	Conn     net.Conn // the accepted connection (the shield's): TLS runs on top of it
	Log      *slog.Logger
	Ctx      context.Context // ended by End, and by a shield kick
	Deadline time.Time       // the whole session's

	t       *Tracker
	cancel  context.CancelFunc
	handler sessionHandler // Log's
	watched *shield.Conn   // by WatchShield
}

// Open starts the frame of a session on c, accepted by t's Serve: proto
// names the protocol ("smtp", "pop3", "imap"), the listener is t's name.
// The caller defers End.
func (t *Tracker) Open(c net.Conn, proto string, sessionTimeout time.Duration) *Frame {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Frame{
		ID:       NewID(),
		Conn:     c,
		Ctx:      ctx,
		Deadline: time.Now().Add(sessionTimeout),
		t:        t,
		cancel:   cancel,
	}
	f.handler = sessionHandler{base: t.log.Handler(), f: f, proto: proto}
	f.Log = slog.New(&f.handler)
	return f
}

// sessionHandler is a session logger's handler. The connection's
// attributes (conn, remote, proto, listener) are bound to the server's
// handler, which formats them, only when the session logs its first line
// at an enabled level: many sessions log nothing (refused and idle
// clients at the default level, every session at level warn), and
// formatting them for every connection was about an eighth of an accepted
// message's allocations (issue 15). Lines read the same as with the
// attributes bound at once.
type sessionHandler struct {
	base  slog.Handler
	f     *Frame
	proto string
	once  sync.Once
	bound slog.Handler
}

func (h *sessionHandler) handler() slog.Handler {
	h.once.Do(func() {
		// Attrs, not key-value pairs: no boxing of each value.
		h.bound = h.base.WithAttrs([]slog.Attr{slog.String("conn", h.f.ID),
			slog.String("remote", addrString(h.f.Conn.RemoteAddr())), slog.String("proto", h.proto),
			slog.String("listener", h.f.t.name)})
	})
	return h.bound
}

// addrString is a.String(), in one allocation for a TCP address (three
// for net.TCPAddr's String): the same text, an IPv4-mapped address shown
// as IPv4.
func addrString(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(ta.Zone), ap.Port()).String()
}

func (h *sessionHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.base.Enabled(ctx, l)
}

func (h *sessionHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.handler().Handle(ctx, r)
}

func (h *sessionHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return h.handler().WithAttrs(as)
}

func (h *sessionHandler) WithGroup(name string) slog.Handler {
	return h.handler().WithGroup(name)
}

// End ends the session's context (and the shield watch).
func (f *Frame) End() {
	if f.watched != nil {
		f.watched.OnDone(nil)
	}
	f.cancel()
}

// WatchShield ends the session when the shield wants its connection gone
// mid-session (newly denied address, ban, lockdown, eviction): the
// session context is cancelled, so that backend work in progress stops,
// then kick runs (it closes the connection, which ends the protocol loop).
// Without a shield beneath Conn it does nothing.
func (f *Frame) WatchShield(kick func()) {
	sc := shield.FromConn(f.Conn)
	if sc == nil {
		return
	}
	f.watched = sc
	// The shield runs it when it kicks the connection: no goroutine per
	// session waiting for that (issue 15).
	sc.OnDone(func() {
		f.Log.Info("session closed by shield")
		f.cancel()
		kick()
	})
}

// guardWriteTimeout bounds the write of a panic's reply.
const guardWriteTimeout = 5 * time.Second

// Guard recovers a panic of the session goroutine; defer it there, after
// the deferred End. The panic is logged with its stack and counted, and
// reply is written to *w and flushed, so that the client hears why the
// session ends (it is a temporary error in the protocol's words). *w may
// still be nil: a session that panics before it could write is closed
// without a word.
func (f *Frame) Guard(w **bufio.Writer, reply string) {
	v := recover()
	if v == nil {
		return
	}
	f.t.Panicked()
	f.Log.Error("session panic", "panic", v, "stack", string(debug.Stack()))
	if *w == nil {
		return
	}
	defer func() { recover() }() // a writer left broken by the panic
	f.Conn.SetWriteDeadline(time.Now().Add(guardWriteTimeout))
	(*w).WriteString(reply)
	(*w).Flush()
}

// Handshake runs a server TLS handshake on c (the accepted connection for
// implicit TLS, the current one for STARTTLS) within timeout, and clears
// the deadlines afterwards. A failed handshake is logged, reported to the
// shield as a protocol error and returned; the caller ends the session.
func (f *Frame) Handshake(c net.Conn, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	tc := tls.Server(c, cfg)
	tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.HandshakeContext(f.Ctx); err != nil {
		f.Log.Debug("tls handshake failed", "err", err)
		shield.Report(f.Conn, shield.ProtocolError)
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// FailedLogin is the one routine for refused credentials: it logs
// "auth failed" with the user as the client gave it (sanitized), reports
// the failure to the shield, and waits delay plus accountDelay(user) (the
// shield's per-account delay, which grows with failures on that account
// from anywhere; nil for none) before the caller answers. A success never
// waits, so the real user is not slowed by an attack on their account.
//
// The wait ends early when the session does (a shield kick) or the server
// shuts down. It returns the shield's decision: when it is not Allow, the
// caller ends the session with it instead of answering.
func (f *Frame) FailedLogin(user string, delay time.Duration, accountDelay func(string, netip.Addr) time.Duration) shield.Decision {
	f.Log.Info("auth failed", "user", Sanitize(user, 64))
	d := shield.ReportAuth(f.Conn, user, false)
	if accountDelay != nil {
		delay += accountDelay(user, clientAddr(f.Conn))
	}
	f.Wait(delay)
	return d
}

// ErrClientGone is the cause (context.Cause) of a credential check's
// context that WhileVerifying ended because the client closed its
// connection.
var ErrClientGone = errors.New("the client closed the connection")

// WhileVerifying watches the connection while the session checks
// credentials, which may wait a long time for the password hasher in a
// login flood: when the client closes its connection meanwhile, the
// returned context (a child of Ctx) is cancelled, so that the departed
// login gives up its place in the hasher's queue instead of costing an
// argon2id computation for nobody while live clients wait.
//
// c is the session's connection (TLS, or the accepted one) and r the
// session's reader of it. The watch consumes no byte: it peeks at the
// socket beneath c (recv with MSG_PEEK). A client that has sent more (a
// pipelined command, bytes already in r) is alive and is not watched
// further, except in TLS, where the bytes may be the close_notify alert
// a client sends before it closes (RFC 8446 6.1): there the client is
// gone when its FIN follows them. A connection that is no socket
// (net.Pipe in tests) is not watched.
//
// The caller calls end with the check's error once the check returns. end
// stops the watch, leaving the connection's read deadline at the
// session's (every read sets its own before reading), and reports whether
// the session is over: the check failed with the cancellation because the
// client left (the check was abandoned) or because the session ended
// meanwhile (a shield kick: a ban, a rule, lockdown, closed the socket).
// Neither is a failed login (the shield is not told, no delay) nor a
// failure of the server (no warning with the cancelled query's error:
// "postgresql unavailable: ... context canceled" said the database was
// down when a ban had closed the session). An abandoned check is logged
// ("login abandoned", at debug) and counted (Tracker.Abandoned); one cut
// short by the session's end is logged ("login cut short: session
// ended", at debug). Either way the caller ends the session without a
// reply.
func (f *Frame) WhileVerifying(c net.Conn, r *bufio.Reader) (ctx context.Context, end func(err error) (over bool)) {
	ctx, cancel := context.WithCancelCause(f.Ctx)
	finish := func(err error) bool {
		cancelled := errors.Is(err, context.Canceled)
		abandoned := cancelled && errors.Is(context.Cause(ctx), ErrClientGone)
		ended := cancelled && !abandoned && f.Ctx.Err() != nil
		cancel(nil)
		switch {
		case abandoned:
			f.t.abandoned.Add(1)
			f.Log.Debug("login abandoned")
		case ended:
			f.Log.Debug("login cut short: session ended")
		}
		return abandoned || ended
	}
	if r != nil && r.Buffered() > 0 {
		return ctx, finish // the client has sent more: it was there a moment ago
	}
	sock, rc, inTLS := socketOf(c)
	if rc == nil {
		return ctx, finish
	}
	// The watch lasts the session at most, whatever the command timeout
	// the session set for its last read.
	sock.SetReadDeadline(f.Deadline)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		if peerClosed(rc, inTLS) {
			cancel(ErrClientGone)
		}
	}()
	return ctx, func(err error) bool {
		sock.SetReadDeadline(aLongTimeAgo) // wakes the watch
		<-watching
		sock.SetReadDeadline(f.Deadline)
		return finish(err)
	}
}

// aLongTimeAgo is a read deadline in the past: a read waiting for the
// socket returns at once.
var aLongTimeAgo = time.Unix(1, 0)

// socketOf is the socket beneath c (under TLS and the shield's wrappers)
// and its raw access, or a nil RawConn when c is no socket; inTLS says a
// TLS connection was on top.
func socketOf(c net.Conn) (sock net.Conn, rc syscall.RawConn, inTLS bool) {
	for range 8 {
		if tc, ok := c.(*tls.Conn); ok {
			c, inTLS = tc.NetConn(), true
			continue
		}
		if sc, ok := c.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return nil, nil, false
			}
			return c, rc, inTLS
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return nil, nil, false
}

// TCP states (Linux include/net/tcp_states.h), as TCP_INFO gives them.
const (
	tcpClose     = 7
	tcpCloseWait = 8 // the peer's FIN came (RFC 9293 3.3.2)
)

// maxDataWakes bounds how often a TLS watch looks again at bytes waiting
// in the socket. Go's poller is edge-triggered, so each look follows new
// bytes or the FIN: a handful covers a close_notify and the FIN behind it.
const maxDataWakes = 8

// peerClosed waits until the socket is readable and reports whether the
// peer closed it (a FIN read as end of stream, or a reset). Data waiting
// means the peer is alive, unless records (a TLS session) and the peer's
// FIN came after the data; a read deadline that passes ends the watch.
// The data stays in the socket for the session to read.
func peerClosed(rc syscall.RawConn, records bool) bool {
	var b [1]byte
	closed, wakes := false, 0
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // nothing yet: the poller waits for the socket
			case err != nil: // ECONNRESET, ETIMEDOUT...: the connection is gone
				closed = true
			case n == 0: // RFC 9293 3.6: the peer's FIN, end of its stream
				closed = true
			case records:
				if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil &&
					(info.State == tcpCloseWait || info.State == tcpClose) {
					closed = true
					return true
				}
				wakes++
				return wakes > maxDataWakes // wait for more bytes, or the FIN
			}
			return true
		}
	})
	return err == nil && closed
}

// clientAddr is the client's address: the shield's (after the PROXY
// protocol) when c came through one, else the socket's peer.
func clientAddr(c net.Conn) netip.Addr {
	if sc := shield.FromConn(c); sc != nil {
		return sc.Addr()
	}
	return IP(c.RemoteAddr())
}

// IP is the IP address of a (unmapped: IPv4-mapped IPv6 as IPv4), or the
// zero Addr when it has none. A TCP address is read without formatting
// and parsing it, which took three allocations per call (issue 15).
func IP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// Wait waits d, or less when the session ends or the server shuts down;
// it reports whether the whole of d passed.
func (f *Frame) Wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.Ctx.Done():
	case <-f.t.stop:
	}
	return false
}

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// NewID returns a random id for a connection or a message: 16 characters
// of lower-case base32 (80 bits).
func NewID() string {
	var b [10]byte
	rand.Read(b[:])
	var id [16]byte
	idEncoding.Encode(id[:], b[:])
	return string(id[:]) // one allocation (EncodeToString makes two)
}

// IsLoopback reports whether a is a loopback TCP address (where the
// configuration may allow logins without TLS).
func IsLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// Sanitize makes client text safe for a log line or a reply: at most max
// bytes, printable ASCII only (anything else becomes '?').
func Sanitize(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// httpVerbs are the HTTP methods a web client or proxy-abuse probe sends
// to a mail port (cross-protocol attacks).
var httpVerbs = map[string]bool{"GET": true, "POST": true, "HEAD": true, "PUT": true, "CONNECT": true, "OPTIONS": true, "DELETE": true, "PATCH": true, "TRACE": true}

// IsHTTPVerb reports whether verb (upper case) is an HTTP method: line
// protocols answer it with an error and close.
func IsHTTPVerb(verb string) bool { return httpVerbs[verb] }

// NotACommand reports whether line cannot start any command of a protocol
// whose commands begin with a letter (SMTP: RFC 5321 4.1.1, POP3: RFC 1939
// 3): random bytes, binary, a reply or a header sent to the wrong port.
// Such a client is no mail client that mistyped; the session answers once
// and closes, as Postfix does by default (smtpd_forbidden_commands holds
// regexp:{{/^[^A-Z]/ Bogus}}, case-insensitive), instead of reading on to
// the error limit: a junk flood then costs one line per connection. An
// empty line is not judged here (a plain syntax error).
func NotACommand(line string) bool {
	if line == "" {
		return false
	}
	c := line[0] | 0x20 // ASCII lower case
	return c < 'a' || c > 'z'
}

// ReadDeadline is when the next read must be done: timeout from now, but
// never past the session's deadline.
func (f *Frame) ReadDeadline(timeout time.Duration) time.Time {
	d := time.Now().Add(timeout)
	if d.After(f.Deadline) {
		d = f.Deadline
	}
	return d
}

// ReadLine reads one command line of at most max bytes from r, which
// reads c, within timeout (and the session's deadline); see ReadLine.
func (f *Frame) ReadLine(c net.Conn, r *bufio.Reader, max int, timeout time.Duration) (string, error) {
	c.SetReadDeadline(f.ReadDeadline(timeout))
	return ReadLine(r, max)
}

// ReadFailure is why a session's read failed, as its reply needs to know.
type ReadFailure int

const (
	ReadGone           ReadFailure = iota // the client left, or the connection was closed: nothing to answer
	ReadTimeout                           // the command did not come in time
	ReadSessionTimeout                    // the session's time is up
)

// ReadFailed classifies the error of a read that ends the session and
// logs it ("timeout", or "read failed" for errors other than the client
// leaving). The protocol answers a timeout with its own words.
func (f *Frame) ReadFailed(err error) ReadFailure {
	switch {
	case IsTimeout(err):
		why := ReadTimeout
		if time.Now().After(f.Deadline) {
			why = ReadSessionTimeout
		}
		f.Log.Info("timeout", "session", why == ReadSessionTimeout)
		return why
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded):
	default:
		f.Log.Debug("read failed", "err", err)
	}
	return ReadGone
}

// Commands is a line protocol's session (SMTP, POP3) as Frame.Loop drives
// it. Replies are buffered until Flush.
type Commands interface {
	// ReadCommand reads the next command line under the protocol's
	// timeouts (Frame.ReadLine).
	ReadCommand() (string, error)
	// Dispatch runs one command line and writes its reply; it returns the
	// error that Fail answers, if any.
	Dispatch(line string) error
	// Fail answers a failed command, counting it where the protocol
	// does; true: the session ends.
	Fail(err error) bool
	// Reply writes one of the protocol's replies (a Replies field).
	Reply(reply error)
	Flush() error
}

// Replies are a protocol's replies to the events Frame.Loop handles.
type Replies struct {
	TooLong        error // what ReadCommand returns for an overlong line; answered by Fail
	Quit           error // what Dispatch returns when the session ends after its reply
	ShuttingDown   error
	Timeout        error // no command in time
	SessionTimeout error // the session's time is up
	SASLCancelled  error // a SASL exchange the client cancelled ("*")
	SASLMalformed  error // a SASL response that is not base64
}

// DecodeSASL decodes a SASL response (connsrv.DecodeSASL) into the
// protocol's errors.
func (rs *Replies) DecodeSASL(s string) ([]byte, error) {
	b, err := DecodeSASL(s)
	switch {
	case errors.Is(err, ErrSASLCancelled):
		return nil, rs.SASLCancelled
	case err != nil:
		return nil, rs.SASLMalformed
	}
	return b, nil
}

// SASLResponse flushes the challenge s has written and reads the
// client's response to it (RFC 4954 4, RFC 5034 4). A read that fails
// ends the session (rs.Quit, after ReadEnded); an overlong line is
// rs.TooLong.
func (f *Frame) SASLResponse(s Commands, rs *Replies) ([]byte, error) {
	if err := s.Flush(); err != nil {
		return nil, rs.Quit
	}
	line, err := s.ReadCommand()
	switch {
	case errors.Is(err, rs.TooLong):
		return nil, rs.TooLong
	case err != nil:
		f.ReadEnded(err, s, rs)
		return nil, rs.Quit
	}
	return rs.DecodeSASL(line)
}

// Loop reads and runs commands until the session ends: the client quits
// (Dispatch returns rs.Quit, whose reply is flushed), leaves or times out,
// a failure ends it, or the server shuts down (waiting for a command, the
// session is idle and Shutdown wakes it to answer). An overlong line is
// answered by Fail like a failed command.
func (f *Frame) Loop(r *bufio.Reader, s Commands, rs *Replies) {
	for {
		if f.t.Closing() {
			s.Reply(rs.ShuttingDown)
			s.Flush()
			return
		}
		f.t.SetIdle(f.Conn, true)
		line, err := s.ReadCommand()
		f.t.SetIdle(f.Conn, false)
		switch {
		case errors.Is(err, rs.TooLong):
		case err != nil && f.t.Closing() && IsTimeout(err):
			continue // woken by Shutdown: the loop answers
		case err != nil:
			f.ReadEnded(err, s, rs)
			return
		default:
			err = s.Dispatch(line)
		}
		if errors.Is(err, rs.Quit) {
			s.Flush()
			return
		}
		if err != nil && s.Fail(err) {
			return
		}
		// PIPELINING (RFC 2920 3.1 for SMTP, RFC 2449 6.6 for POP3):
		// answer a group of commands in one write, flushing once no
		// complete command is waiting.
		if !HasLine(r) && s.Flush() != nil {
			return
		}
	}
}

// ReadEnded answers a read that ends the session (see ReadFailed): a
// timeout gets the protocol's reply, a client that left nothing.
func (f *Frame) ReadEnded(err error, s Commands, rs *Replies) {
	switch f.ReadFailed(err) {
	case ReadTimeout:
		s.Reply(rs.Timeout)
	case ReadSessionTimeout:
		s.Reply(rs.SessionTimeout)
	default:
		return
	}
	s.Flush()
}
