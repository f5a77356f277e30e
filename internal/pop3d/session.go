package pop3d

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/agua-mail/agua/internal/connsrv"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/agua-mail/agua/shield"
)

// state is where a session stands (RFC 1939 3). The UPDATE state is not
// one a command can run in: QUIT in TRANSACTION enters it, applies the
// deletions and ends the session.
type state uint8

const (
	stateAuthorization state = 1 << iota // greeting sent, not logged in
	stateTransaction                     // logged in, maildrop locked
)

const anyState = stateAuthorization | stateTransaction

func (s state) String() string {
	switch s {
	case stateAuthorization:
		return "authorization"
	case stateTransaction:
		return "transaction"
	}
	return "unknown"
}

type command struct {
	handler func(*session, string) error
	states  state
}

// commands is the one table of verbs; dispatch checks the state here.
var commands map[string]command

func init() {
	commands = map[string]command{
		"CAPA": {(*session).cmdCAPA, anyState},
		"QUIT": {(*session).cmdQUIT, anyState},
		"STLS": {(*session).cmdSTLS, stateAuthorization},
		"USER": {(*session).cmdUSER, stateAuthorization},
		"PASS": {(*session).cmdPASS, stateAuthorization},
		"AUTH": {(*session).cmdAUTH, stateAuthorization},
		"STAT": {(*session).cmdSTAT, stateTransaction},
		"LIST": {(*session).cmdLIST, stateTransaction},
		"UIDL": {(*session).cmdUIDL, stateTransaction},
		"RETR": {(*session).cmdRETR, stateTransaction},
		"TOP":  {(*session).cmdTOP, stateTransaction},
		"DELE": {(*session).cmdDELE, stateTransaction},
		"RSET": {(*session).cmdRSET, stateTransaction},
		"NOOP": {(*session).cmdNOOP, stateTransaction},
	}
}

// errQuit ends a session after its reply has been written.
var errQuit = errors.New("quit")

type session struct {
	srv    *Server
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	tw     *timedWriter
	log    *slog.Logger
	info   Session
	state  state
	errors int
	ctx    context.Context // ended by the session's end and by a shield kick
	frame  *connsrv.Frame

	user string // from USER, waiting for PASS

	// TRANSACTION state.
	drop      Maildrop
	msgs      []Message
	deleted   []bool
	retrieved []bool
}

func (s *Server) serveConn(c net.Conn) {
	fr := s.Open(c, "pop3", s.cfg.SessionTimeout)
	defer fr.End()
	ss := &session{
		srv:   s,
		conn:  c,
		info:  Session{ID: fr.ID, Listener: s.name, RemoteAddr: c.RemoteAddr()},
		state: stateAuthorization,
		ctx:   fr.Ctx,
		frame: fr,
		log:   fr.Log,
	}
	defer c.Close()
	fr.WatchShield(func() { c.Close() })
	// A session that did not QUIT changes nothing: only the lock goes.
	defer func() {
		if ss.drop != nil {
			if err := ss.drop.Close(); err != nil {
				ss.log.Warn("pop3 maildrop close failed", "err", err)
			}
		}
	}()
	defer fr.Guard(&ss.w, "-ERR "+errInternal.line()+"\r\n")
	if s.cfg.ImplicitTLS {
		tc, err := fr.Handshake(c, s.cfg.TLS, s.cfg.PreAuthTimeout)
		if err != nil {
			return
		}
		ss.conn = tc
		ss.info.TLS = true
	}
	ss.r = bufio.NewReaderSize(ss.conn, 4096)
	ss.tw = &timedWriter{c: ss.conn, timeout: s.cfg.PreAuthTimeout}
	ss.w = bufio.NewWriterSize(ss.tw, 4096)
	ss.log.Debug("pop3 session start")
	ss.run()
	ss.log.Debug("pop3 session end", "errors", ss.errors, "state", ss.state.String())
}

// timedWriter gives every write to the client a fresh deadline, so a
// large RETR may take long while a stalled client cannot hold the session.
type timedWriter struct {
	c       net.Conn
	timeout time.Duration
}

func (t *timedWriter) Write(p []byte) (int, error) {
	t.c.SetWriteDeadline(time.Now().Add(t.timeout))
	return t.c.Write(p)
}

// commandTimeout is the time allowed for each command in the current
// state (mox: 30 s before login, 30 min after).
func (ss *session) commandTimeout() time.Duration {
	if ss.state == stateTransaction {
		return ss.srv.cfg.IdleTimeout
	}
	return ss.srv.cfg.PreAuthTimeout
}

func (ss *session) run() {
	ss.ok("%s POP3 agua ready", ss.srv.cfg.Hostname)
	if ss.Flush() != nil {
		return
	}
	ss.frame.Loop(ss.r, ss, &frameReplies)
}

// ReadCommand reads the next command line (connsrv.Commands).
func (ss *session) ReadCommand() (string, error) { return ss.readLine() }

// Reply writes one of the replies the frame sends (connsrv.Commands).
func (ss *session) Reply(e error) { ss.reply(AsError(e)) }

// frameReplies are the session's replies to what connsrv.Frame.Loop
// handles.
var frameReplies = connsrv.Replies{TooLong: errLineTooLong, Quit: errQuit, ShuttingDown: errShuttingDown,
	Timeout: errTimeout, SessionTimeout: errSessionTimeout, SASLCancelled: errAuthCancelled, SASLMalformed: errAuthBase64}

// Dispatch runs one command line through the command table. RFC 1939 3:
// keywords are case-insensitive and separated from arguments by one
// space.
func (ss *session) Dispatch(line string) error {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	// RFC 1939 7: PASS must follow USER directly.
	if verb != "PASS" {
		ss.user = ""
	}
	cmd, ok := commands[verb]
	if !ok {
		if connsrv.IsHTTPVerb(verb) {
			ss.log.Debug("pop3 http request on mail port", "verb", verb)
			return ss.closeWith(errHTTP)
		}
		return errUnknownCommand
	}
	if ss.state&cmd.states == 0 {
		return errBadState
	}
	return cmd.handler(ss, arg)
}

// closeWith answers e, reports a protocol error to the shield and ends the
// session. It is for refusals after which the bytes the client has already
// sent cannot be trusted to be commands.
func (ss *session) closeWith(e *Error) error {
	shield.Report(ss.conn, shield.ProtocolError)
	ss.reply(e)
	return errQuit
}

// Fail answers a failed command. Protocol errors and failed logins count
// towards MaxErrors; protocol errors are reported to the shield. It
// returns true when the session must end.
func (ss *session) Fail(err error) bool {
	e := AsError(err)
	if e.Cause != nil {
		ss.log.Warn("pop3 command failed", "reply", e.line(), "err", e.Cause)
	}
	if e.kind != kindPlain {
		ss.errors++
		if e.kind == kindProtocol {
			if d := shield.Report(ss.conn, shield.ProtocolError); d.Action != shield.Allow {
				return ss.shieldEnds(d)
			}
		}
		if ss.errors >= ss.srv.cfg.MaxErrors {
			ss.reply(errTooManyErrors)
			ss.Flush()
			ss.log.Info("pop3 too many errors", "errors", ss.errors)
			return true
		}
	}
	ss.reply(e)
	return false
}

// shieldEnds answers a shield decision taken mid-session and reports that
// the session must end: -ERR [SYS/TEMP] for a temporary refusal, -ERR
// [AUTH] for a policy one, nothing for drop and tarpit.
func (ss *session) shieldEnds(d shield.Decision) bool {
	ss.log.Info("pop3 session ended by shield", "action", d.Action.String(), "source", d.Source)
	if d.Action == shield.Reject {
		code := "AUTH"
		if d.Temporary {
			code = "SYS/TEMP"
		}
		ss.reply(Errorf(code, "%s", d.Reason))
		ss.Flush()
	}
	return true
}

// readLine reads one command line of at most MaxLineLength bytes
// including the terminator (see connsrv.ReadLine); an overlong one is
// consumed and answered as errLineTooLong.
func (ss *session) readLine() (string, error) {
	line, err := ss.frame.ReadLine(ss.conn, ss.r, ss.srv.cfg.MaxLineLength, ss.commandTimeout())
	if errors.Is(err, connsrv.ErrLineTooLong) {
		return "", errLineTooLong
	}
	return line, err
}

// ok writes a positive reply (buffered).
func (ss *session) ok(format string, a ...any) {
	ss.w.WriteString("+OK")
	if format != "" {
		ss.w.WriteByte(' ')
		if len(a) == 0 {
			ss.w.WriteString(format)
		} else {
			fmt.Fprintf(ss.w, format, a...)
		}
	}
	ss.w.WriteString("\r\n")
}

// reply writes a negative reply (buffered).
func (ss *session) reply(e *Error) {
	ss.w.WriteString("-ERR ")
	ss.w.WriteString(e.line())
	ss.w.WriteString("\r\n")
}

// line writes one line of a multi-line response; the caller byte-stuffs
// (RFC 1939 3) where the content is not its own.
func (ss *session) line(s string) {
	ss.w.WriteString(s)
	ss.w.WriteString("\r\n")
}

// end terminates a multi-line response.
func (ss *session) end() { ss.w.WriteString(".\r\n") }

func (ss *session) Flush() error {
	ss.tw.timeout = ss.commandTimeout()
	return ss.w.Flush()
}

// resetConn switches reader and writer to c (after STLS).
func (ss *session) resetConn(c net.Conn) {
	ss.conn = c
	ss.r.Reset(c)
	ss.tw.c = c
	ss.w.Reset(ss.tw)
}
