package smtpd

import (
	"errors"
	"strconv"
	"strings"

	"github.com/agua-mail/agua/internal/connsrv"
	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/shield"
)

func (ss *session) cmdEHLO(arg string) error { return ss.greet(arg, true) }
func (ss *session) cmdHELO(arg string) error { return ss.greet(arg, false) }

// greet handles EHLO/HELO; RFC 5321 4.1.4: it also resets any transaction.
func (ss *session) greet(arg string, extended bool) error {
	if arg == "" || strings.ContainsAny(arg, " \t") && !strings.HasPrefix(arg, "[") {
		return errEHLOSyntax
	}
	ss.info.Helo = arg
	ss.resetTransaction()
	ss.state = stateReady
	if !extended {
		ss.replyLine(250, "", ss.srv.cfg.Hostname, " Hello ", arg)
		return nil
	}
	// RFC 5321 4.1.1.1: the greeting, then one extension per line.
	writeReplyLine(ss.w, 250, '-', "", ss.srv.cfg.Hostname, " Hello ", arg)
	var buf [16]string // on the stack: no allocation per EHLO
	exts := append(buf[:0], ss.srv.extensions...)
	if ss.srv.cfg.TLS != nil && !ss.info.TLS {
		exts = append(exts, "STARTTLS")
	}
	if ss.authOffered() {
		exts = append(exts, "AUTH PLAIN LOGIN")
	}
	ss.replyLines(250, exts...)
	return nil
}

// authOffered: AUTH only on submission listeners, and only over TLS unless
// the loopback exception applies (RFC 4954 4, RFC 8314 3).
func (ss *session) authOffered() bool {
	if ss.info.Mode == ModeMX || ss.info.User != "" {
		return false
	}
	return ss.info.TLS || ss.srv.cfg.AllowInsecureAuthLoopback && connsrv.IsLoopback(ss.conn.RemoteAddr())
}

func (ss *session) cmdSTARTTLS(arg string) error {
	if ss.srv.cfg.TLS == nil {
		return Errorf(502, "5.5.1", "STARTTLS not available")
	}
	// RFC 3207 4 names no reply for STARTTLS on a session already under
	// TLS (4.2: it is no longer offered). The command is implemented, just
	// not valid now: RFC 5321 4.2.4's 503, as OpenSMTPD answers.
	if ss.info.TLS {
		return errTLSActive
	}
	if arg != "" {
		return errSyntax
	}
	// RFC 3207 4.2 / CVE-2011-0411: anything pipelined after STARTTLS
	// would be read as if it came over TLS. The session is closed rather
	// than the buffered bytes discarded: more of the injected group may
	// still be in flight, and whether it arrived before this check is a
	// matter of timing, so discarding would still run some of it as
	// plaintext commands. Only a broken client or an attacker pipelines
	// past STARTTLS.
	if ss.r.Buffered() > 0 {
		return ss.closeWith(errSTARTTLSPipelined)
	}
	ss.replyLine(220, "2.0.0", "Ready to start TLS")
	if err := ss.Flush(); err != nil {
		return errQuit
	}
	tc, err := ss.frame.Handshake(ss.conn, ss.srv.cfg.TLS, ss.srv.cfg.CommandTimeout)
	if err != nil {
		return errQuit
	}
	ss.conn = tc
	ss.r.Reset(tc)
	ss.w.Reset(tc)
	// RFC 3207 4.2: forget everything learned before TLS, including an
	// authentication done in the clear (the loopback exception).
	ss.info.TLS = true
	ss.info.Helo = ""
	ss.info.User = ""
	ss.env = Envelope{}
	ss.state = stateConnected
	return nil
}

func (ss *session) cmdMAIL(arg string) error {
	if ss.info.Mode != ModeMX && ss.info.User == "" {
		if !ss.info.TLS && !ss.authOffered() {
			return errNeedTLS
		}
		return errNeedAuth
	}
	path, params, err := parsePathArg(arg, "FROM:")
	if err != nil {
		return err
	}
	from, err := parseReversePath(path)
	if err != nil {
		return err
	}
	mail := Mail{From: from}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "SIZE": // RFC 1870 6
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return errSyntax
			}
			if n > ss.srv.cfg.MaxMessageSize {
				return errTooBig
			}
			mail.Size = n
		case "BODY": // RFC 6152
			if u := strings.ToUpper(v); u != "7BIT" && u != "8BITMIME" {
				return errBodyType
			}
		case "SMTPUTF8": // RFC 6531 3.4
			if v != "" {
				return errSyntax
			}
			mail.SMTPUTF8 = true
		case "AUTH": // RFC 4954 5: accepted and not trusted.
		default:
			return Errorf(555, "5.5.4", "Unsupported MAIL parameter %s", connsrv.Sanitize(k, 32))
		}
	}
	if !mail.SMTPUTF8 && !isASCII(from) {
		return errUTF8Addr
	}
	// Asked at each transaction: a reload may have changed the allowlist.
	ss.info.Trusted = shield.Allowlisted(ss.conn)
	ss.info.KnownGood = shield.KnownGood(ss.conn)
	tx, err := ss.srv.backend.NewTransaction(ss.ctx, &ss.info, mail)
	if err != nil {
		if !ss.reportSending(err) {
			return errQuit
		}
		return err
	}
	ss.tx = tx
	ss.env = Envelope{From: from, SMTPUTF8: mail.SMTPUTF8}
	ss.state = stateMail
	ss.replyLine(250, "2.1.0", "Sender OK")
	return nil
}

func (ss *session) cmdRCPT(arg string) error {
	path, params, err := parsePathArg(arg, "TO:")
	if err != nil {
		return err
	}
	if len(params) > 0 {
		return errRcptParam
	}
	rcpt, err := parseForwardPath(path)
	if err != nil {
		return err
	}
	if !ss.env.SMTPUTF8 && !isASCII(rcpt) {
		return errUTF8Addr
	}
	// RFC 5321 4.5.3.1.8: 452 for too many recipients, the client retries
	// the rest later.
	if len(ss.env.Recipients) >= ss.srv.cfg.MaxRecipients {
		ss.reply(errTooManyRcpts)
		return nil
	}
	for _, r := range ss.env.Recipients {
		if strings.EqualFold(r, rcpt) {
			ss.replyLine(250, "2.1.5", "Recipient OK (duplicate)")
			return nil
		}
	}
	if err := ss.tx.AddRcpt(ss.ctx, rcpt); err != nil {
		// Harvesting shows as many unknown recipients.
		if errors.Is(err, ErrUnknownRecipient) && !ss.report(mailevents.UnknownRecipient) {
			return errQuit
		}
		if !ss.reportSending(err) {
			return errQuit
		}
		e := AsError(err)
		ss.reply(e)
		if e.Cause != nil {
			ss.log.Warn("smtp rcpt failed", "err", e.Cause)
		}
		return nil
	}
	if !ss.report(mailevents.RecipientAccepted) {
		return errQuit
	}
	ss.env.Recipients = append(ss.env.Recipients, rcpt)
	ss.state = stateRcpt
	ss.replyLine(250, "2.1.5", "Recipient OK")
	return nil
}

func (ss *session) cmdRSET(arg string) error {
	ss.resetTransaction()
	ss.replyLine(250, "2.0.0", "OK")
	return nil
}

func (ss *session) cmdNOOP(arg string) error {
	ss.replyLine(250, "2.0.0", "OK")
	return nil
}

// cmdVRFY: RFC 5321 3.5.3 allows 252 to avoid confirming addresses, which
// is what a harvesting-resistant server does.
func (ss *session) cmdVRFY(arg string) error {
	ss.replyLine(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
	return nil
}

func (ss *session) cmdHELP(arg string) error {
	ss.replyLine(214, "2.0.0", "See RFC 5321; agua")
	return nil
}

func (ss *session) cmdQUIT(arg string) error {
	ss.replyLine(221, "2.0.0", ss.srv.cfg.Hostname, " closing connection")
	return errQuit
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
