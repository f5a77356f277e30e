package imapd

import (
	"context"
	"errors"

	"github.com/agua-mail/agua/internal/accounts"
)

// NewAuthenticator checks IMAP logins against an accounts directory.
func NewAuthenticator(dir accounts.Lookup) Authenticator { return accountsAuth{dir} }

type accountsAuth struct{ dir accounts.Lookup }

func (a accountsAuth) Authenticate(ctx context.Context, user, pass string) (string, int64, error) {
	u, err := a.dir.Authenticate(ctx, user, pass)
	switch {
	case err == nil:
		return u.Address, u.Quota, nil
	case errors.Is(err, accounts.ErrAuthFailed), errors.Is(err, accounts.ErrInvalid):
		return "", 0, ErrAuthFailed
	default:
		return "", 0, err
	}
}
