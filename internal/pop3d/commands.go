package pop3d

import (
	"strconv"
	"strings"

	"github.com/agua-mail/agua/internal/connsrv"
)

// cmdCAPA lists capabilities (RFC 2449 5). USER and SASL are listed only
// where a login is allowed now, STLS only before TLS and login.
func (ss *session) cmdCAPA(arg string) error {
	ss.ok("Capability list follows")
	ss.line("TOP")
	ss.line("UIDL")
	ss.line("RESP-CODES")
	ss.line("AUTH-RESP-CODE")
	ss.line("PIPELINING")
	if ss.state == stateAuthorization {
		if ss.srv.cfg.TLS != nil && !ss.info.TLS {
			ss.line("STLS")
		}
		if ss.authAllowed() {
			ss.line("USER")
			ss.line("SASL PLAIN")
		}
	}
	ss.line("IMPLEMENTATION agua")
	ss.end()
	return nil
}

// authAllowed: logins only over TLS, unless the loopback exception
// applies (RFC 2595 2.2, RFC 8314 3).
func (ss *session) authAllowed() bool {
	return ss.info.TLS || ss.srv.cfg.AllowInsecureAuthLoopback && connsrv.IsLoopback(ss.conn.RemoteAddr())
}

// cmdSTLS implements RFC 2595 4.
func (ss *session) cmdSTLS(arg string) error {
	if ss.srv.cfg.TLS == nil || ss.info.TLS {
		return errNoSTLS
	}
	// RFC 2595 4 / CVE-2011-0411 class: anything pipelined after STLS
	// would be read as if it came over TLS. The session is closed rather
	// than the buffered bytes discarded: more of the injected group may
	// still be in flight, and whether it arrived before this check is a
	// matter of timing, so discarding would still run some of it as
	// plaintext commands.
	if ss.r.Buffered() > 0 {
		return ss.closeWith(errSTLSPipelined)
	}
	ss.ok("Begin TLS negotiation")
	if err := ss.Flush(); err != nil {
		return errQuit
	}
	tc, err := ss.frame.Handshake(ss.conn, ss.srv.cfg.TLS, ss.commandTimeout())
	if err != nil {
		return errQuit
	}
	ss.resetConn(tc)
	ss.info.TLS = true
	ss.user = ""
	return nil
}

// cmdQUIT ends the session; in TRANSACTION it enters the UPDATE state
// (RFC 1939 6): the messages marked deleted are removed now, and only now.
func (ss *session) cmdQUIT(arg string) error {
	if ss.state != stateTransaction {
		ss.ok("%s POP3 agua signing off", ss.srv.cfg.Hostname)
		return errQuit
	}
	var deleted, retrieved []int
	for i := range ss.msgs {
		if ss.deleted[i] {
			deleted = append(deleted, i)
		} else if ss.retrieved[i] {
			retrieved = append(retrieved, i)
		}
	}
	if err := ss.drop.Update(deleted, retrieved); err != nil {
		e := *errUpdateFailed
		e.Cause = err
		ss.log.Warn("pop3 update failed", "user", ss.info.User, "err", err)
		ss.reply(&e)
		return errQuit
	}
	ss.log.Info("pop3 logout", "user", ss.info.User, "deleted", len(deleted), "retrieved", len(retrieved))
	ss.ok("%s POP3 agua signing off (%d messages left)", ss.srv.cfg.Hostname, len(ss.msgs)-len(deleted))
	return errQuit
}

// totals counts the messages not marked deleted and their size.
func (ss *session) totals() (n int, size int64) {
	for i, m := range ss.msgs {
		if !ss.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

func (ss *session) cmdSTAT(arg string) error {
	n, size := ss.totals()
	ss.ok("%d %d", n, size)
	return nil
}

// msgArg parses a message number (RFC 1939 5: it may not refer to a
// deleted message) and returns its 0-based index.
func (ss *session) msgArg(arg string) (int, error) {
	i, err := parseNumber(arg)
	if err != nil {
		return 0, errMsgNumber
	}
	if i < 1 || i > len(ss.msgs) {
		return 0, errNoSuchMessage
	}
	if ss.deleted[i-1] {
		return 0, errDeleted
	}
	return i - 1, nil
}

// parseNumber accepts only plain decimal digits (no sign, no spaces
// beyond the argument separator), at most 9 of them.
func parseNumber(s string) (int, error) {
	s = strings.TrimRight(s, " ")
	if s == "" || len(s) > 9 {
		return 0, errSyntax
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errSyntax
		}
	}
	return strconv.Atoi(s)
}

// cmdLIST and cmdUIDL answer for one message or, without an argument,
// every message not marked deleted (RFC 1939 5, 7).
func (ss *session) cmdLIST(arg string) error {
	return ss.listing(arg, func(i int) string { return strconv.FormatInt(ss.msgs[i].Size, 10) })
}

func (ss *session) cmdUIDL(arg string) error {
	return ss.listing(arg, func(i int) string { return ss.msgs[i].UIDL })
}

func (ss *session) listing(arg string, value func(i int) string) error {
	if strings.TrimSpace(arg) != "" {
		i, err := ss.msgArg(arg)
		if err != nil {
			return err
		}
		ss.ok("%d %s", i+1, value(i))
		return nil
	}
	n, size := ss.totals()
	ss.ok("%d messages (%d octets)", n, size)
	for i := range ss.msgs {
		if !ss.deleted[i] {
			ss.line(strconv.Itoa(i+1) + " " + value(i))
		}
	}
	ss.end()
	return nil
}

func (ss *session) cmdRETR(arg string) error {
	i, err := ss.msgArg(arg)
	if err != nil {
		return err
	}
	if err := ss.send(i, -1); err != nil {
		return err
	}
	ss.retrieved[i] = true
	return nil
}

// cmdTOP sends the header and the first n lines of the body (RFC 1939 7).
func (ss *session) cmdTOP(arg string) error {
	msg, lines, ok := strings.Cut(strings.TrimSpace(arg), " ")
	if !ok {
		return errSyntax
	}
	i, err := ss.msgArg(msg)
	if err != nil {
		return err
	}
	n, err := parseNumber(lines)
	if err != nil {
		return errSyntax
	}
	return ss.send(i, n)
}

// send writes message i as a multi-line response: all of it, or the
// header and bodyLines lines of the body.
func (ss *session) send(i, bodyLines int) error {
	rc, err := ss.drop.Open(i)
	if err != nil {
		return AsError(err)
	}
	defer rc.Close()
	if bodyLines < 0 {
		ss.ok("%d octets", ss.msgs[i].Size)
	} else {
		ss.ok("Top of message follows")
	}
	if err := writeMessage(ss.w, rc, bodyLines); err != nil {
		// The response is half written: the client cannot resynchronise.
		ss.log.Warn("pop3 sending message failed", "msg", i+1, "err", err)
		return errQuit
	}
	ss.end()
	return nil
}

func (ss *session) cmdDELE(arg string) error {
	i, err := ss.msgArg(arg)
	if err != nil {
		return err
	}
	ss.deleted[i] = true
	ss.ok("Message %d deleted", i+1)
	return nil
}

// cmdRSET unmarks every deleted message (RFC 1939 5).
func (ss *session) cmdRSET(arg string) error {
	clear(ss.deleted)
	n, size := ss.totals()
	ss.ok("Maildrop has %d messages (%d octets)", n, size)
	return nil
}

func (ss *session) cmdNOOP(arg string) error {
	ss.ok("")
	return nil
}
