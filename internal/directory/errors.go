package directory

import "github.com/agua-mail/agua/internal/accounts"

// Sentinel errors: the accounts contract's own (internal/accounts), so a
// caller matches them with errors.Is whichever backend it talks to. Errors
// returned by this package wrap one of these with a message meant for the
// operator.
var (
	ErrExists     = accounts.ErrExists
	ErrNotFound   = accounts.ErrNotFound
	ErrNotEmpty   = accounts.ErrNotEmpty
	ErrAuthFailed = accounts.ErrAuthFailed
	ErrNotLocal   = accounts.ErrNotLocal
	ErrNoSuchUser = accounts.ErrNoSuchUser
	ErrInvalid    = accounts.ErrInvalid
)

func newErr(kind error, msg string) error { return accounts.NewError(kind, msg) }

func errDomainNotLocal(domain string) error {
	return newErr(ErrNotFound, "domain "+domain+" is not a local domain; add it with `agua domain add`")
}
