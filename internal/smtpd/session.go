package smtpd

import (
	"bufio"
	"context"
	"errors"
	"github.com/agua-mail/agua/internal/connsrv"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/shield"
)

// state is where a session stands; each command lists the states it is
// allowed in (RFC 5321 4.1.4 ordering).
type state uint8

const (
	stateConnected state = 1 << iota // banner sent, no EHLO/HELO yet
	stateReady                       // greeted, no transaction
	stateMail                        // MAIL FROM accepted
	stateRcpt                        // at least one RCPT TO accepted
)

const anyState = stateConnected | stateReady | stateMail | stateRcpt

type command struct {
	handler func(*session, string) error
	states  state
}

// commands is the one table of verbs; dispatch checks the state here.
var commands map[string]command

func init() {
	commands = map[string]command{
		"EHLO":     {(*session).cmdEHLO, anyState},
		"HELO":     {(*session).cmdHELO, anyState},
		"STARTTLS": {(*session).cmdSTARTTLS, stateReady},
		"AUTH":     {(*session).cmdAUTH, stateReady},
		"MAIL":     {(*session).cmdMAIL, stateReady},
		"RCPT":     {(*session).cmdRCPT, stateMail | stateRcpt},
		"DATA":     {(*session).cmdDATA, stateRcpt},
		"RSET":     {(*session).cmdRSET, anyState},
		"NOOP":     {(*session).cmdNOOP, anyState},
		"VRFY":     {(*session).cmdVRFY, anyState},
		"EXPN":     {(*session).cmdVRFY, anyState},
		"HELP":     {(*session).cmdHELP, anyState},
		"QUIT":     {(*session).cmdQUIT, anyState},
	}
}

// internalLine is the reply to a session's panic (connsrv.Frame.Guard).
var internalLine = errInternal.line()

// The sessions' read and write buffers are reused: a session that
// carries one message allocates neither.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

func getBuffers(c net.Conn) (*bufio.Reader, *bufio.Writer) {
	r, w := readers.Get().(*bufio.Reader), writers.Get().(*bufio.Writer)
	r.Reset(c)
	w.Reset(c)
	return r, w
}

// putBuffers gives the session's buffers back at its normal end (a
// session that panics leaves them to the panic guard and the collector).
func (ss *session) putBuffers() {
	ss.r.Reset(nil)
	ss.w.Reset(nil)
	readers.Put(ss.r)
	writers.Put(ss.w)
}

// errQuit ends a session after its reply has been written.
var errQuit = errors.New("quit")

type session struct {
	srv    *Server
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	log    *slog.Logger
	info   Session
	state  state
	env    Envelope    // the open transaction as the session sees it
	tx     Transaction // the backend's side of it; nil outside one
	errors int
	// limitReported: this transaction's sending-limit refusal was
	// reported to the shield (once per transaction, not per recipient).
	limitReported bool
	remembered    string          // the user the session is filed under for EndSessions ("" none)
	ctx           context.Context // ended by the session's end and by a shield kick
	frame         *connsrv.Frame
}

func (s *Server) serveConn(c net.Conn) {
	fr := s.Open(c, "smtp", s.cfg.SessionTimeout)
	defer fr.End()
	ss := &session{
		srv:   s,
		conn:  c,
		info:  Session{ID: fr.ID, Mode: s.mode, RemoteAddr: c.RemoteAddr()},
		state: stateConnected,
		ctx:   fr.Ctx,
		frame: fr,
		// Abuse seen by one session (HTTP verbs, pregreet, error limits,
		// shield endings) is logged at debug level only: the shield counts
		// it and logs aggregated lines, so a flood cannot flood the log.
		log: fr.Log,
	}
	defer c.Close()
	fr.WatchShield(func() { c.Close() })
	defer fr.Guard(&ss.w, internalLine)
	if s.mode == ModeSubmissions {
		tc, err := fr.Handshake(c, s.cfg.TLS, s.cfg.CommandTimeout)
		if err != nil {
			return
		}
		ss.conn = tc
		ss.info.TLS = true
	}
	ss.r, ss.w = getBuffers(ss.conn)
	ss.log.Debug("smtp session start")
	defer ss.resetTransaction() // a transaction left open by a dropped client is aborted
	defer s.forget(ss)
	ss.run()
	ss.log.Debug("smtp session end", "errors", ss.errors)
	ss.putBuffers()
}

func (ss *session) run() {
	s := ss.srv
	var screen func(context.Context) *Error
	if s.mode == ModeMX && s.hooks.Screen != nil {
		screen = s.hooks.Screen(ss.conn)
	}
	if s.mode == ModeMX && s.cfg.BannerDelay > 0 && ss.pregreet() {
		return
	}
	if screen != nil {
		if e := screen(ss.ctx); e != nil {
			ss.log.Debug("smtp client screened out", "reply", e.Error())
			ss.reply(e)
			ss.Flush()
			return
		}
	}
	ss.replyLine(220, "", s.cfg.Hostname, " ESMTP agua")
	if ss.Flush() != nil {
		return
	}
	ss.frame.Loop(ss.r, ss, &frameReplies)
}

// pregreet waits BannerDelay for silence. A client that talks first is not
// a patient SMTP client (postscreen's PREGREET test): report and refuse.
func (ss *session) pregreet() bool {
	ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.BannerDelay))
	_, err := ss.r.Peek(1)
	ss.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	if err != nil {
		return true // closed while waiting
	}
	shield.Report(ss.conn, mailevents.PreGreet)
	ss.log.Debug("smtp pregreet talker")
	ss.reply(Errorf(554, "5.5.1", "Protocol error: you spoke before the greeting"))
	ss.Flush()
	return true
}

// ReadCommand reads the next command line (connsrv.Commands).
func (ss *session) ReadCommand() (string, error) {
	return ss.readLine(ss.srv.cfg.MaxCommandLength, ss.srv.cfg.CommandTimeout)
}

// Reply writes one of the replies the frame sends (connsrv.Commands).
func (ss *session) Reply(e error) { ss.reply(AsError(e)) }

// frameReplies are the session's replies to what connsrv.Frame.Loop
// handles.
var frameReplies = connsrv.Replies{TooLong: errLineTooLong, Quit: errQuit, ShuttingDown: errShuttingDown,
	Timeout: errTimeout, SessionTimeout: errSessionTimeout, SASLCancelled: errAuthCancelled, SASLMalformed: errAuthBase64}

// Dispatch runs one command line through the command table.
func (ss *session) Dispatch(line string) error {
	if connsrv.NotACommand(line) {
		ss.log.Debug("smtp non-command line")
		return ss.closeWith(errNotSMTP)
	}
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	cmd, ok := commands[verb]
	if !ok {
		if connsrv.IsHTTPVerb(verb) {
			ss.log.Debug("smtp http request on mail port", "verb", verb)
			return ss.closeWith(errHTTP)
		}
		if verb == "BDAT" {
			// RFC 3030 2: the chunk follows BDAT at once, without waiting
			// for a reply, so the bytes after this line are message data
			// (perhaps someone else's) and must never be read as commands.
			// CHUNKING is not offered, so the session ends here.
			return ss.closeWith(errNoChunking)
		}
		return errUnknownCommand
	}
	if ss.state&cmd.states == 0 {
		err := errBadSequence
		if ss.state == stateConnected {
			err = errNeedEHLO
		}
		if verb == "DATA" {
			return ss.refuseDATA(err)
		}
		return err
	}
	return cmd.handler(ss, strings.TrimSpace(arg))
}

// refuseDATA refuses DATA before its 354. RFC 2920 3.1: the client waits
// for the reply to DATA before it sends the message, so bytes already
// waiting can only be a message sent blind; they are never read as
// commands (Postfix: "improper command pipelining after DATA"). The
// session ends with one reply that says why. A body that arrives only
// after this check is still read as commands, as in Postfix: ending every
// session whose DATA is refused would cut off the conforming pipelining
// clients that answer a refused DATA with RSET.
func (ss *session) refuseDATA(e *Error) error {
	if ss.r.Buffered() > 0 {
		ss.log.Debug("smtp data sent before 354", "refusal", e.Code)
		return ss.closeWith(errDataPipelined)
	}
	return e
}

// closeWith answers e, reports a protocol error to the shield and ends the
// session. It is for refusals after which the bytes the client has already
// sent cannot be trusted to be commands.
func (ss *session) closeWith(e *Error) error {
	shield.Report(ss.conn, shield.ProtocolError)
	ss.reply(e)
	return errQuit
}

// Fail answers a failed command. Protocol errors count towards MaxErrors and
// are reported to the shield; policy refusals (unknown user, relay) are
// reported by their handlers. It returns true when the session must end.
func (ss *session) Fail(err error) bool {
	e := AsError(err)
	if e.Cause != nil {
		ss.log.Warn("smtp command failed", "code", e.Code, "err", e.Cause)
	}
	if isProtocolError(e) {
		ss.errors++
		if d := shield.Report(ss.conn, shield.ProtocolError); d.Action != shield.Allow {
			return ss.shieldEnds(d)
		}
		if ss.errors >= ss.srv.cfg.MaxErrors {
			ss.reply(errTooManyErrors)
			ss.Flush()
			ss.log.Debug("smtp too many errors", "errors", ss.errors)
			return true
		}
	}
	ss.reply(e)
	return e.Code == 421
}

func isProtocolError(e *Error) bool {
	switch e {
	case errBadSequence, errSyntax, errUnknownCommand, errLineTooLong, errNeedEHLO, errNestedMail, errAuthBase64, errAuthMech:
		return true
	}
	return e.Code == 500 || e.Code == 501 || e.Code == 502
}

// shieldEnds answers a shield decision taken mid-session and reports that
// the session must end.
func (ss *session) shieldEnds(d shield.Decision) bool {
	ss.log.Debug("smtp session ended by shield", "action", d.Action.String(), "source", d.Source)
	if d.Action == shield.Reject {
		ss.reply(Errorf(421, "4.7.0", "%s", d.Reason))
		ss.Flush()
	}
	return true
}

// report tells the shield about behaviour and says whether to go on.
func (ss *session) report(ev shield.Event) bool {
	d := shield.Report(ss.conn, ev)
	if d.Action == shield.Allow {
		return true
	}
	ss.shieldEnds(d)
	return false
}

// reportSending tells the shield about a submission over a sending limit
// or from a suspended account (outbound_abuse, the client's address), once
// per transaction, and says whether to go on.
func (ss *session) reportSending(err error) bool {
	if !errors.Is(err, ErrSendLimit) && !errors.Is(err, ErrSendSuspended) || ss.limitReported {
		return true
	}
	ss.limitReported = ss.tx != nil
	return ss.report(mailevents.OutboundAbuse)
}

// readLine reads one command line of at most max bytes (see
// connsrv.ReadLine); an overlong one is consumed and answered as
// errLineTooLong.
func (ss *session) readLine(max int, timeout time.Duration) (string, error) {
	line, err := ss.frame.ReadLine(ss.conn, ss.r, max, timeout)
	if errors.Is(err, connsrv.ErrLineTooLong) {
		return "", errLineTooLong
	}
	return line, err
}

// reply writes e (buffered). Multi-line replies use replyLines.
func (ss *session) reply(e *Error) {
	ss.replyLine(e.Code, e.Enhanced, e.Msg)
}

// replyLine writes one reply line (buffered): the code, the enhanced code
// if any, and the text, which is the concatenation of msg.
func (ss *session) replyLine(code int, enhanced string, msg ...string) {
	writeReplyLine(ss.w, code, ' ', enhanced, msg...)
}

// writeReplyLine writes "code" sep ["enhanced "] msg... CRLF to w without
// building the line first: the reply path allocates nothing.
func writeReplyLine(w *bufio.Writer, code int, sep byte, enhanced string, msg ...string) {
	if code < 100 || code > 999 {
		code = 451 // never sent: every reply in this package has three digits
	}
	w.WriteByte(byte('0' + code/100))
	w.WriteByte(byte('0' + code/10%10))
	w.WriteByte(byte('0' + code%10))
	w.WriteByte(sep)
	if enhanced != "" {
		w.WriteString(enhanced)
		w.WriteByte(' ')
	}
	for _, m := range msg {
		w.WriteString(m)
	}
	w.WriteString("\r\n")
}

// replyLines writes a multi-line reply (RFC 5321 4.2.1): every line but the
// last with "-" after the code.
func (ss *session) replyLines(code int, lines ...string) {
	for i, l := range lines {
		sep := byte('-')
		if i == len(lines)-1 {
			sep = ' '
		}
		writeReplyLine(ss.w, code, sep, "", l)
	}
}

func (ss *session) Flush() error {
	ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.CommandTimeout))
	return ss.w.Flush()
}

// resetTransaction aborts the open transaction, if any (RSET, EHLO, a
// refused or delivered message, the end of the session).
func (ss *session) resetTransaction() {
	if ss.tx != nil {
		ss.tx.Abort()
		ss.tx = nil
	}
	ss.env = Envelope{}
	ss.limitReported = false
	if ss.state&(stateMail|stateRcpt) != 0 {
		ss.state = stateReady
	}
}
