package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Timeouts bound each step of a session with a peer. The defaults are
// RFC 5321 4.5.3.2's minimums.
type Timeouts struct {
	Connect   time.Duration // TCP connect (not in the RFC; 30s)
	Greeting  time.Duration // 4.5.3.2.1: initial 220, 5m
	Command   time.Duration // EHLO, STARTTLS, AUTH, RSET, QUIT (5m)
	Mail      time.Duration // 4.5.3.2.2: MAIL, 5m
	Rcpt      time.Duration // 4.5.3.2.3: RCPT, 5m
	DataInit  time.Duration // 4.5.3.2.4: DATA's 354, 2m
	DataBlock time.Duration // 4.5.3.2.5: each write of message data, 3m
	DataEnd   time.Duration // 4.5.3.2.6: reply to the final dot, 10m
}

// DefaultTimeouts are RFC 5321 4.5.3.2's values.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		Connect: 30 * time.Second, Greeting: 5 * time.Minute, Command: 5 * time.Minute,
		Mail: 5 * time.Minute, Rcpt: 5 * time.Minute, DataInit: 2 * time.Minute,
		DataBlock: 3 * time.Minute, DataEnd: 10 * time.Minute,
	}
}

func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts()
	for _, p := range []struct{ v, def *time.Duration }{
		{&t.Connect, &d.Connect}, {&t.Greeting, &d.Greeting}, {&t.Command, &d.Command},
		{&t.Mail, &d.Mail}, {&t.Rcpt, &d.Rcpt}, {&t.DataInit, &d.DataInit},
		{&t.DataBlock, &d.DataBlock}, {&t.DataEnd, &d.DataEnd},
	} {
		if *p.v <= 0 {
			*p.v = *p.def
		}
	}
	return t
}

// session is one SMTP connection to a peer (RFC 5321 as a client).
type session struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	t       Timeouts
	host    string // the MX name (or relay host), for TLS and logs
	addr    netip.AddrPort
	ext     map[string]string // EHLO keywords (upper case) → parameters
	tls     bool
	dead    bool // the session cannot carry another transaction
	helo    string
	greetR  Reply
	unwatch func() bool // stops closing the connection when the engine stops
}

// dial connects to addr from source (if valid) and reads the greeting.
func dial(ctx context.Context, addr netip.AddrPort, source netip.Addr, host string, t Timeouts) (*session, error) {
	d := net.Dialer{Timeout: t.Connect}
	if source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
	}
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	s := &session{conn: conn, t: t, host: host, addr: addr}
	s.r = bufio.NewReaderSize(conn, maxReplyLine)
	s.w = bufio.NewWriterSize(&deadlineWriter{conn, t.DataBlock}, 32<<10)
	// RFC 5321 4.5.3.2.1: wait for the 220 greeting.
	rep, err := s.read(t.Greeting)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.greetR = rep
	if rep.Code != 220 {
		// RFC 5321 3.1: 554 (or anything but 220) means no service
		// here; QUIT politely, and the caller tries the next host.
		s.quit()
		return nil, &ReplyError{"greeting", rep}
	}
	return s, nil
}

// deadlineWriter sets the write deadline before each write, so each
// block of data has its own timeout (RFC 5321 4.5.3.2.5).
type deadlineWriter struct {
	c net.Conn
	d time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.d))
	return w.c.Write(p)
}

func (s *session) read(timeout time.Duration) (Reply, error) {
	s.conn.SetReadDeadline(time.Now().Add(timeout))
	rep, err := readReply(s.r)
	if err != nil {
		s.dead = true
		return rep, err
	}
	if rep.Code == 421 {
		// RFC 5321 3.8: the server is closing the channel.
		s.dead = true
	}
	return rep, nil
}

func (s *session) cmd(timeout time.Duration, format string, args ...any) (Reply, error) {
	fmt.Fprintf(s.w, format+"\r\n", args...)
	if err := s.w.Flush(); err != nil {
		s.dead = true
		return Reply{}, err
	}
	return s.read(timeout)
}

// hello sends EHLO, or HELO when the server does not know EHLO (RFC 5321
// 3.2), and records the extensions.
func (s *session) hello(name string) error {
	s.helo = name
	rep, err := s.cmd(s.t.Command, "EHLO %s", name)
	if err != nil {
		return err
	}
	if rep.Code == 250 {
		s.ext = map[string]string{}
		for _, l := range rep.Lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			s.ext[strings.ToUpper(k)] = v
		}
		return nil
	}
	if rep.Permanent() && !s.dead {
		if rep, err = s.cmd(s.t.Command, "HELO %s", name); err != nil {
			return err
		}
		if rep.Code == 250 {
			s.ext = map[string]string{}
			return nil
		}
	}
	return &ReplyError{"EHLO", rep}
}

func (s *session) has(ext string) bool {
	_, ok := s.ext[ext]
	return ok
}

// sizeLimit is the SIZE the server announced (RFC 1870), 0 if none.
func (s *session) sizeLimit() int64 {
	n, _ := strconv.ParseInt(s.ext["SIZE"], 10, 64)
	return n
}

// startTLS upgrades the connection (RFC 3207) and says EHLO again, as
// RFC 3207 4.2 requires: what the server said before TLS is forgotten.
func (s *session) startTLS(cfg *tls.Config) error {
	rep, err := s.cmd(s.t.Command, "STARTTLS")
	if err != nil {
		return err
	}
	if rep.Code != 220 {
		return &ReplyError{"STARTTLS", rep}
	}
	tc := tls.Client(s.conn, cfg)
	tc.SetDeadline(time.Now().Add(s.t.Command))
	if err := tc.Handshake(); err != nil {
		s.dead = true
		return fmt.Errorf("TLS handshake with %s: %w", s.host, err)
	}
	tc.SetDeadline(time.Time{})
	s.conn, s.tls = tc, true
	s.r = bufio.NewReaderSize(tc, maxReplyLine)
	s.w = bufio.NewWriterSize(&deadlineWriter{tc, s.t.DataBlock}, 32<<10)
	return s.hello(s.helo)
}

// auth authenticates to a relay host with PLAIN (RFC 4616) or LOGIN,
// whichever the server offers (RFC 4954).
func (s *session) auth(user, pass string) error {
	mechs := strings.Fields(strings.ToUpper(s.ext["AUTH"]))
	has := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	var rep Reply
	var err error
	switch {
	case has("PLAIN"):
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		rep, err = s.cmd(s.t.Command, "AUTH PLAIN %s", ir)
	case has("LOGIN"):
		rep, err = s.cmd(s.t.Command, "AUTH LOGIN")
		for _, v := range []string{user, pass} {
			if err != nil || rep.Code != 334 {
				break
			}
			rep, err = s.cmd(s.t.Command, "%s", base64.StdEncoding.EncodeToString([]byte(v)))
		}
	default:
		return fmt.Errorf("%w: relay host offers no AUTH PLAIN or LOGIN", ErrProtocol)
	}
	if err != nil {
		return err
	}
	if rep.Code != 235 {
		return &ReplyError{"AUTH", rep}
	}
	return nil
}

func (s *session) reset() {
	if s.dead {
		return
	}
	if rep, err := s.cmd(s.t.Command, "RSET"); err != nil || rep.Code != 250 {
		s.dead = true
	}
}

func (s *session) quit() {
	if s.unwatch != nil {
		s.unwatch()
	}
	if !s.dead {
		s.conn.SetDeadline(time.Now().Add(min(s.t.Command, 10*time.Second)))
		fmt.Fprintf(s.w, "QUIT\r\n")
		if s.w.Flush() == nil {
			readReply(s.r)
		}
	}
	s.dead = true
	s.conn.Close()
}

// mailParams are the MAIL FROM parameters of one transaction.
type mailParams struct {
	size     int64
	eightBit bool // BODY=8BITMIME (RFC 6152)
	utf8     bool // SMTPUTF8 (RFC 6531)
}

// txOutcome is what the peer said to one transaction.
type txOutcome struct {
	mail  Reply   // the MAIL reply
	rcpts []Reply // per recipient, in order; Code 0: never answered
	data  Reply   // DATA's refusal, or the reply to the final dot
	err   error   // a network or protocol error that ended the session
}

// send runs one mail transaction: MAIL, RCPT..., DATA and the message,
// pipelined when the server offers PIPELINING (RFC 2920).
func (s *session) send(from string, rcpts []string, p mailParams, body io.Reader) (out txOutcome) {
	out.rcpts = make([]Reply, len(rcpts))
	mail := "MAIL FROM:<" + from + ">"
	if p.size > 0 && s.has("SIZE") {
		mail += " SIZE=" + strconv.FormatInt(p.size, 10)
	}
	if p.eightBit {
		mail += " BODY=8BITMIME"
	}
	if p.utf8 {
		mail += " SMTPUTF8"
	}
	pipelined := s.has("PIPELINING")
	fail := func(err error) txOutcome {
		s.dead = true
		out.err = err
		return out
	}
	write := func(line string) { s.w.WriteString(line + "\r\n") }

	write(mail)
	if !pipelined {
		if err := s.w.Flush(); err != nil {
			return fail(err)
		}
		var err error
		if out.mail, err = s.read(s.t.Mail); err != nil {
			return fail(err)
		}
		if out.mail.Code/100 != 2 {
			return out
		}
	}
	accepted := 0
	for i, r := range rcpts {
		write("RCPT TO:<" + r + ">")
		if pipelined {
			continue
		}
		if err := s.w.Flush(); err != nil {
			return fail(err)
		}
		rep, err := s.read(s.t.Rcpt)
		if err != nil {
			return fail(err)
		}
		out.rcpts[i] = rep
		if rep.Code/100 == 2 {
			accepted++
		}
		if s.dead {
			return out
		}
	}
	if !pipelined && accepted == 0 {
		return out
	}
	// RFC 2920 3.1: DATA is the last command of a pipelined group.
	write("DATA")
	if err := s.w.Flush(); err != nil {
		return fail(err)
	}
	if pipelined {
		var err error
		if out.mail, err = s.read(s.t.Mail); err != nil {
			return fail(err)
		}
		for i := range rcpts {
			if out.rcpts[i], err = s.read(s.t.Rcpt); err != nil {
				return fail(err)
			}
			if out.rcpts[i].Code/100 == 2 {
				accepted++
			}
		}
	}
	rep, err := s.read(s.t.DataInit)
	if err != nil {
		return fail(err)
	}
	if rep.Code/100 == 2 {
		// A 2xx instead of 354 would make us believe in a delivery that
		// carried no message.
		return fail(fmt.Errorf("%w: %q in reply to DATA", ErrProtocol, trunc(rep.String())))
	}
	if rep.Code != 354 {
		out.data = rep
		return out
	}
	if out.mail.Code/100 != 2 || accepted == 0 {
		// RFC 2920 3.1: the server said 354 although nobody can receive
		// the message; end the data at once, and the transaction fails.
		write(".")
		if err := s.w.Flush(); err != nil {
			return fail(err)
		}
		if out.data, err = s.read(s.t.DataEnd); err != nil {
			return fail(err)
		}
		return out
	}
	dw := textproto.NewWriter(s.w).DotWriter()
	if _, err := io.Copy(dw, body); err != nil {
		return fail(err)
	}
	if err := dw.Close(); err != nil {
		return fail(err)
	}
	if err := s.w.Flush(); err != nil {
		return fail(err)
	}
	if out.data, err = s.read(s.t.DataEnd); err != nil {
		return fail(err)
	}
	return out
}

// errorText is an error as a reply-like line for logs and DSNs, without
// a peer's words passing as ours.
func errorText(err error) string {
	var re *ReplyError
	if errors.As(err, &re) {
		return re.Reply.String()
	}
	return err.Error()
}
