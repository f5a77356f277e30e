package pop3d

import (
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/agua-mail/agua/shield"
)

// cmdUSER takes the name for PASS (RFC 1939 7). The reply never says
// whether the user exists.
func (ss *session) cmdUSER(arg string) error {
	if !ss.authAllowed() {
		return errNeedTLS
	}
	name := strings.TrimSpace(arg)
	if name == "" {
		return errSyntax
	}
	ss.user = name
	ss.ok("Send PASS")
	return nil
}

// cmdPASS: RFC 1939 7 notes that the argument may contain spaces; it is
// taken whole.
func (ss *session) cmdPASS(arg string) error {
	if !ss.authAllowed() {
		return errNeedTLS
	}
	if ss.user == "" {
		return errNoUser
	}
	user := ss.user
	ss.user = ""
	return ss.login(user, arg)
}

// cmdAUTH implements RFC 5034 with PLAIN (RFC 4616, via go-sasl). Without
// an argument it lists the mechanisms, as many clients expect. Credentials
// never reach the logs.
func (ss *session) cmdAUTH(arg string) error {
	if !ss.authAllowed() {
		return errNeedTLS
	}
	mech, initial, hasInitial := strings.Cut(strings.TrimSpace(arg), " ")
	if mech == "" {
		ss.ok("Supported mechanisms follow")
		ss.line("PLAIN")
		ss.end()
		return nil
	}
	if !strings.EqualFold(mech, "PLAIN") {
		return errAuthMech
	}
	var resp []byte
	var err error
	if hasInitial {
		resp, err = frameReplies.DecodeSASL(initial)
	} else {
		resp, err = ss.challenge()
	}
	if err != nil {
		return err
	}
	var identity, user, pass string
	srv := sasl.NewPlainServer(func(id, u, p string) error {
		identity, user, pass = id, u, p
		return nil
	})
	if _, _, err := srv.Next(resp); err != nil {
		return errAuthMalformed
	}
	// RFC 4616 2: acting as someone else is not supported.
	if identity != "" && identity != user {
		return errAuthzID
	}
	return ss.login(user, pass)
}

// challenge sends an empty continuation (RFC 5034 4) and reads the
// client's response.
func (ss *session) challenge() ([]byte, error) {
	ss.w.WriteString("+ \r\n")
	return ss.frame.SASLResponse(ss, &frameReplies)
}

// login checks credentials, tells the shield, and opens the maildrop.
// A failed login is answered after AuthFailureDelay plus the shield's
// per-account delay; a successful one never waits, so the real user is not
// slowed by an attack on their account. A client that leaves while the
// check waits for the password hasher gives up its place in the queue
// (Frame.WhileVerifying).
func (ss *session) login(user, pass string) error {
	ctx, end := ss.frame.WhileVerifying(ss.conn, ss.r)
	canonical, err := ss.srv.backend.Authenticate(ctx, &ss.info, user, pass)
	if end(err) {
		return errQuit // the client left, or the shield closed the session, while its login waited: no one to answer
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Temporary() {
			return e
		}
		if f := ss.srv.hooks.Auth; f != nil {
			f(&ss.info, false)
		}
		d := ss.frame.FailedLogin(user, ss.srv.cfg.AuthFailureDelay, ss.srv.hooks.AccountDelay)
		if d.Action != shield.Allow {
			ss.shieldEnds(d)
			return errQuit
		}
		return errAuthFailed
	}
	if f := ss.srv.hooks.Auth; f != nil {
		f(&ss.info, true)
	}
	if d := shield.ReportAuth(ss.conn, canonical, true); d.Action != shield.Allow {
		ss.shieldEnds(d)
		return errQuit
	}
	ss.info.User = canonical
	drop, err := ss.srv.backend.OpenMaildrop(ss.ctx, &ss.info, canonical)
	if err != nil {
		// RFC 1939 7: the session stays in AUTHORIZATION.
		ss.info.User = ""
		e := AsError(err)
		ss.log.Info("pop3 maildrop not opened", "user", canonical, "reply", e.line())
		return e
	}
	ss.drop = drop
	ss.msgs = drop.Messages()
	ss.deleted = make([]bool, len(ss.msgs))
	ss.retrieved = make([]bool, len(ss.msgs))
	ss.state = stateTransaction
	n, size := ss.totals()
	ss.log.Info("pop3 login", "user", canonical, "messages", n, "tls", ss.info.TLS)
	ss.ok("Logged in, maildrop has %d messages (%d octets)", n, size)
	return nil
}
