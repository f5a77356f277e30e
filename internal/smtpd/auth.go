package smtpd

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/agua-mail/agua/shield"
)

// cmdAUTH implements RFC 4954 with PLAIN (RFC 4616, via go-sasl) and LOGIN
// (draft-murchison-sasl-login; go-sasl no longer ships a LOGIN server).
// Credentials never reach the logs.
func (ss *session) cmdAUTH(arg string) error {
	if ss.info.Mode == ModeMX {
		return Errorf(502, "5.5.1", "AUTH not available on this port; use submission")
	}
	if ss.info.User != "" {
		return errAlreadyAuth
	}
	if !ss.authOffered() {
		return errNeedTLS
	}
	mech, initial, hasInitial := strings.Cut(arg, " ")
	var user, pass string
	var err error
	switch strings.ToUpper(mech) {
	case "PLAIN":
		user, pass, err = ss.authPlain(initial, hasInitial)
	case "LOGIN":
		user, pass, err = ss.authLogin(initial, hasInitial)
	default:
		return errAuthMech
	}
	if err != nil {
		return err
	}
	// The backend returns a temporary *Error for its own failures; any other
	// error means the credentials were refused.
	// A client that leaves while the check waits for the password hasher
	// gives up its place in the queue (Frame.WhileVerifying).
	ctx, end := ss.frame.WhileVerifying(ss.conn, ss.r)
	canonical, err := ss.srv.backend.Authenticate(ctx, &ss.info, user, pass)
	if end(err) {
		return errQuit // the client left, or the shield closed the session: no one to answer
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Temporary() {
			return e
		}
		if h := ss.srv.hooks.Auth; h != nil {
			h(&ss.info, false)
		}
		d := ss.frame.FailedLogin(user, ss.srv.cfg.AuthFailureDelay, ss.srv.hooks.AccountDelay)
		if d.Action != shield.Allow {
			ss.shieldEnds(d)
			return errQuit
		}
		ss.reply(errAuthFailed)
		return nil
	}
	ss.info.User = canonical
	ss.srv.remember(ss)
	ss.log.Info("smtp auth ok", "user", canonical)
	if h := ss.srv.hooks.Auth; h != nil {
		h(&ss.info, true)
	}
	if d := shield.ReportAuth(ss.conn, canonical, true); d.Action != shield.Allow {
		ss.shieldEnds(d)
		return errQuit
	}
	ss.replyLine(235, "2.7.0", "Authentication successful")
	return nil
}

// challenge sends a 334 with a base64 challenge and reads the response.
func (ss *session) challenge(c string) ([]byte, error) {
	ss.replyLine(334, "", base64.StdEncoding.EncodeToString([]byte(c)))
	return ss.frame.SASLResponse(ss, &frameReplies)
}

func (ss *session) authPlain(initial string, hasInitial bool) (user, pass string, err error) {
	var resp []byte
	if hasInitial {
		resp, err = frameReplies.DecodeSASL(initial)
	} else {
		resp, err = ss.challenge("")
	}
	if err != nil {
		return "", "", err
	}
	var identity string
	srv := sasl.NewPlainServer(func(id, u, p string) error {
		identity, user, pass = id, u, p
		return nil
	})
	if _, _, err := srv.Next(resp); err != nil {
		return "", "", Errorf(501, "5.5.2", "Malformed PLAIN response")
	}
	// RFC 4616 2: acting as someone else is not supported.
	if identity != "" && identity != user {
		return "", "", Errorf(535, "5.7.8", "Authorization identity must match the user")
	}
	return user, pass, nil
}

func (ss *session) authLogin(initial string, hasInitial bool) (user, pass string, err error) {
	var u []byte
	if hasInitial {
		u, err = frameReplies.DecodeSASL(initial)
	} else {
		u, err = ss.challenge("Username:")
	}
	if err != nil {
		return "", "", err
	}
	p, err := ss.challenge("Password:")
	if err != nil {
		return "", "", err
	}
	return string(u), string(p), nil
}
