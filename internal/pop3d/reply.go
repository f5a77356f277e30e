package pop3d

import (
	"errors"
	"fmt"
)

// Error is a negative reply carried as an error: an RFC 2449 response code
// (RFC 3206: "AUTH", "SYS/TEMP", "SYS/PERM", "IN-USE", "LOGIN-DELAY"; ""
// for none), client-safe text, and an internal cause that is logged but
// never sent to the client.
type Error struct {
	Code  string
	Msg   string
	Cause error
	kind  errKind
}

// errKind says how a failed command counts against the client.
type errKind uint8

const (
	kindPlain    errKind = iota // an ordinary refusal ("no such message")
	kindCounted                 // counts towards MaxErrors (failed login)
	kindProtocol                // counts and is reported to the shield as a protocol error
)

func (e *Error) Error() string {
	s := "-ERR " + e.line()
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Cause }

// line is the reply text after "-ERR ".
func (e *Error) line() string {
	if e.Code == "" {
		return e.Msg
	}
	return "[" + e.Code + "] " + e.Msg
}

// Temporary reports a [SYS/TEMP] or [IN-USE] reply: the client may retry.
func (e *Error) Temporary() bool { return e.Code == "SYS/TEMP" || e.Code == "IN-USE" }

// Errorf builds an *Error with a response code ("" for none).
func Errorf(code, format string, a ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, a...)}
}

func protoErr(msg string) *Error { return &Error{Msg: msg, kind: kindProtocol} }

// AsError turns any error into a reply: an *Error anywhere in the chain is
// used as is; anything else becomes -ERR [SYS/TEMP] with the cause kept
// internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: "SYS/TEMP", Msg: "Temporary local problem, try again later", Cause: err}
}

// ErrInUse is what a Backend returns when another session holds the
// maildrop (RFC 2449 8.1.1).
var ErrInUse = Errorf("IN-USE", "Mailbox is in use by another session, try again later")

// Replies used by the session, in one place.
var (
	errUnknownCommand = protoErr("Unknown command")
	errBadState       = protoErr("Command not valid in this state")
	errSyntax         = protoErr("Syntax error in arguments")
	errMsgNumber      = protoErr("Syntax error: message number expected")
	errLineTooLong    = protoErr("Line too long")
	errNoUser         = protoErr("Send USER first")
	errAuthMech       = protoErr("Unsupported authentication mechanism")
	errAuthBase64     = protoErr("Cannot decode base64 response")
	errAuthMalformed  = protoErr("Malformed PLAIN response")
	errAuthCancelled  = Errorf("", "Authentication cancelled")
	errAuthFailed     = &Error{Code: "AUTH", Msg: "Authentication failed", kind: kindCounted}
	errAuthzID        = &Error{Code: "AUTH", Msg: "Authorization identity must match the user", kind: kindCounted}
	errNeedTLS        = &Error{Code: "AUTH", Msg: "Plaintext authentication disallowed on non-secure connections; use STLS", kind: kindCounted}
	errNoSTLS         = protoErr("STLS not available")
	errSTLSPipelined  = protoErr("Commands pipelined after STLS are not allowed; closing")
	errNoSuchMessage  = Errorf("", "No such message")
	errDeleted        = Errorf("", "Message is deleted")
	errTooManyErrors  = Errorf("", "Too many errors, closing connection")
	errTimeout        = Errorf("", "Disconnected for inactivity")
	errSessionTimeout = Errorf("", "Session time limit exceeded, closing connection")
	errInternal       = Errorf("SYS/TEMP", "Internal error, closing connection")
	errShuttingDown   = Errorf("SYS/TEMP", "Server shutting down, try again later")
	errUpdateFailed   = Errorf("SYS/TEMP", "Some deleted messages were not removed")
	errHTTP           = protoErr("This is a POP3 server, not an HTTP server; closing")
)
