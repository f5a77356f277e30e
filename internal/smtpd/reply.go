package smtpd

import (
	"errors"
	"fmt"
)

// Error is an SMTP reply carried as an error: a code (RFC 5321 4.2), an
// enhanced status code (RFC 3463, announced per RFC 2034), client-safe text,
// and an internal cause that is logged but never sent to the client.
type Error struct {
	Code     int
	Enhanced string // "5.1.1"; "" for replies that carry none (e.g. 220, 221 before EHLO)
	Msg      string
	Cause    error

	sentinel *Error // the reply this one was made from by WithCause
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%d %s %s", e.Code, e.Enhanced, e.Msg)
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Cause }

// Is makes a reply made by WithCause match the sentinel it came from.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && e.sentinel != nil && t == e.sentinel
}

// WithCause returns a copy of e that keeps cause for the log. The copy still
// matches e with errors.Is.
func (e *Error) WithCause(cause error) *Error {
	c := *e
	c.Cause = cause
	c.sentinel = e
	if e.sentinel != nil {
		c.sentinel = e.sentinel
	}
	return &c
}

// Withf returns a copy of e with another code, enhanced code and text that
// still matches e with errors.Is: a family of replies that steer the session
// the same way (the sending limits, each with its own words).
func (e *Error) Withf(code int, enhanced, format string, a ...any) *Error {
	c := e.WithCause(nil)
	c.Code, c.Enhanced, c.Msg = code, enhanced, fmt.Sprintf(format, a...)
	return c
}

// line is e as the client reads it, CRLF included.
func (e *Error) line() string { return replyText(e.Code, e.Enhanced, e.Msg) }

func replyText(code int, enhanced, msg string) string {
	if enhanced != "" {
		return fmt.Sprintf("%d %s %s\r\n", code, enhanced, msg)
	}
	return fmt.Sprintf("%d %s\r\n", code, msg)
}

// Temporary reports a 4xx reply.
func (e *Error) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// Errorf builds an *Error.
func Errorf(code int, enhanced, format string, a ...any) *Error {
	return &Error{Code: code, Enhanced: enhanced, Msg: fmt.Sprintf(format, a...)}
}

// AsError turns any error into a reply: an *Error anywhere in the chain is
// used as is; anything else becomes 451 4.3.0 with the cause kept internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ErrTempLocal.WithCause(err)
}

// Replies a Backend returns. Those that change what the session does are
// matched with errors.Is, never by their code or text.
var (
	// ErrUnknownRecipient refuses a recipient that does not exist; the
	// session reports it to the shield (harvesting shows as many).
	ErrUnknownRecipient = Errorf(550, "5.1.1", "No such user here")
	// ErrRelayDenied refuses a recipient in a domain that is not local on
	// a port that does not relay (RFC 5321 3.6.2).
	ErrRelayDenied = Errorf(550, "5.7.1", "Relay access denied")
	// ErrSenderNotOwned refuses MAIL FROM on submission when the user does
	// not own the address (RFC 6409 6.1).
	ErrSenderNotOwned = Errorf(553, "5.7.1", "Sender address is not owned by the authenticated user")
	// ErrMailboxFull defers a recipient whose mailbox is over quota
	// (RFC 3463 4.2.2: temporary, the sender retries).
	ErrMailboxFull = Errorf(452, "4.2.2", "Mailbox full")
	// ErrAuthFailed refuses credentials (RFC 4954 6).
	ErrAuthFailed = errAuthFailed
	// ErrTempAuth is a backend failure while checking credentials.
	ErrTempAuth = Errorf(454, "4.7.0", "Temporary authentication failure")
	// ErrSendLimit refuses a recipient or message of an authenticated
	// submission over a sending limit (RFC 3463 4.7.1: delivery not
	// authorized, temporary); replies made from it with Withf say which.
	// The session reports it to the shield as outbound_abuse.
	ErrSendLimit = Errorf(451, "4.7.1", "Sending limit reached, try again later")
	// ErrSendSuspended refuses MAIL FROM (or a transaction in progress)
	// from an account whose sending is suspended. 550 5.7.1, permanent
	// (RFC 5321 4.2.1, RFC 3463 3.8 X.7.1): the condition does not clear by
	// retrying, only an operator lifts it, and a client that would retry a
	// 4xx forever (a spam run's queue) must give up. Reported to the shield
	// as outbound_abuse.
	ErrSendSuspended = Errorf(550, "5.7.1", "Sending from this account is suspended; contact the postmaster")
	// ErrTempLocal is any other local failure; the client retries.
	ErrTempLocal = Errorf(451, "4.3.0", "Temporary local problem, try again later")
)

// Replies used by the session. Keeping them here makes the protocol's
// vocabulary readable in one place.
var (
	errBadSequence    = Errorf(503, "5.5.1", "Bad sequence of commands")
	errTLSActive      = Errorf(503, "5.5.1", "Bad sequence of commands: TLS is already active")
	errSyntax         = Errorf(501, "5.5.4", "Syntax error in parameters or arguments")
	errUnknownCommand = Errorf(500, "5.5.2", "Command not recognized")
	errLineTooLong    = Errorf(500, "5.5.2", "Line too long")
	errNeedEHLO       = Errorf(503, "5.5.1", "Send EHLO or HELO first")
	errNeedTLS        = Errorf(530, "5.7.0", "Must issue a STARTTLS command first")
	errNeedAuth       = Errorf(530, "5.7.0", "Authentication required")
	errTooManyRcpts   = Errorf(452, "4.5.3", "Too many recipients")
	errNestedMail     = Errorf(503, "5.5.1", "Sender already specified")
	errAuthFailed     = Errorf(535, "5.7.8", "Authentication credentials invalid")
	errAuthCancelled  = Errorf(501, "5.0.0", "Authentication cancelled")
	errAuthBase64     = Errorf(501, "5.5.2", "Cannot decode base64 response")
	errAuthMech       = Errorf(504, "5.5.4", "Unrecognized authentication mechanism")
	errAlreadyAuth    = Errorf(503, "5.5.1", "Already authenticated")
	errTooBig         = Errorf(552, "5.3.4", "Message size exceeds fixed maximum message size")
	errBareLF         = Errorf(554, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)")
	errNUL            = Errorf(554, "5.6.0", "Message contains a NUL byte, which 8BITMIME does not allow")
	// ErrTooManyHops: the message has MaxReceived or more Received fields
	// (RFC 5321 6.3): a mail loop.
	ErrTooManyHops       = Errorf(554, "5.4.6", "Too many hops: the message has passed through too many servers (mail loop?)")
	errUTF8Addr          = Errorf(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter (RFC 6531)")
	errSTARTTLSPipelined = Errorf(554, "5.5.1", "Commands pipelined after STARTTLS are not allowed; closing")
	errNoChunking        = Errorf(502, "5.5.1", "CHUNKING is not offered; closing")
	errDataPipelined     = Errorf(554, "5.5.1", "Message data sent before DATA was accepted; closing")
	errHTTP              = Errorf(554, "5.7.0", "This is an SMTP server, not an HTTP server; closing")
	errNotSMTP           = Errorf(554, "5.5.2", "Not an SMTP command (commands start with a letter); closing")
	errTooManyErrors     = Errorf(421, "4.7.0", "Too many errors, closing connection")
	errTimeout           = Errorf(421, "4.4.2", "Timeout exceeded, closing connection")
	errSessionTimeout    = Errorf(421, "4.4.2", "Session time limit exceeded, closing connection")
	errInternal          = Errorf(421, "4.3.0", "Internal error, closing connection")
	errShuttingDown      = Errorf(421, "4.3.2", "Service shutting down, try again later")
	errBadAddress        = Errorf(501, "5.1.3", "Bad address syntax")
	errNoBrackets        = Errorf(501, "5.5.4", "Syntax: address must be in angle brackets")
	errEHLOSyntax        = Errorf(501, "5.5.4", "Syntax: EHLO hostname")
	errBodyType          = Errorf(555, "5.5.4", "Unsupported BODY type")
	errRcptParam         = Errorf(555, "5.5.4", "Unsupported RCPT parameter")
)

// errDataLine refuses message data with a line over limit octets, CRLF
// included (smtp.max_line_length), and says the limit: RFC 5321 4.5.3.1.6
// asks every server to take text lines of 1000 octets with CRLF.
func errDataLine(limit int) *Error {
	return Errorf(554, "5.6.0", "Message contains a line longer than %d octets with CRLF (RFC 5321 4.5.3.1.6)", limit)
}
