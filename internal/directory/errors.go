package directory

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these with a
// message meant for the operator; match them with errors.Is.
var (
	ErrExists     = errors.New("already exists")
	ErrNotFound   = errors.New("not found")
	ErrNotEmpty   = errors.New("not empty")
	ErrAuthFailed = errors.New("authentication failed")
	ErrNotLocal   = errors.New("domain is not local")
	ErrNoSuchUser = errors.New("no such user")
	ErrInvalid    = errors.New("invalid")
)

// dirError carries an operator-facing message and the sentinel it stands for.
type dirError struct {
	kind error
	msg  string
}

func (e *dirError) Error() string { return e.msg }
func (e *dirError) Unwrap() error { return e.kind }

func newErr(kind error, msg string) error { return &dirError{kind: kind, msg: msg} }

func errDomainNotLocal(domain string) error {
	return newErr(ErrNotFound, "domain "+domain+" is not a local domain; add it with `agua domain add`")
}
