package imapd

import (
	"context"
	"errors"
	"testing"

	"github.com/agua-mail/agua/internal/accounts"
)

type lookup struct {
	accounts.Lookup
	err error
}

func (l lookup) Authenticate(ctx context.Context, address, password string) (accounts.User, error) {
	if l.err != nil {
		return accounts.User{}, l.err
	}
	return accounts.User{Address: "alice@example.test", Quota: 4096}, nil
}

// Wrong credentials and malformed names are refusals; a failing directory
// is a temporary failure (NO [UNAVAILABLE]), not a wrong password.
func TestNewAuthenticator(t *testing.T) {
	ctx := context.Background()
	if u, q, err := NewAuthenticator(lookup{}).Authenticate(ctx, "Alice@example.test", "pw"); err != nil || u != "alice@example.test" || q != 4096 {
		t.Fatalf("login: %q %d %v", u, q, err)
	}
	for _, e := range []error{accounts.ErrAuthFailed, accounts.ErrInvalid} {
		if _, _, err := NewAuthenticator(lookup{err: e}).Authenticate(ctx, "a", "b"); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("%v: %v, want ErrAuthFailed", e, err)
		}
	}
	down := errors.New("directory down")
	if _, _, err := NewAuthenticator(lookup{err: down}).Authenticate(ctx, "a", "b"); !errors.Is(err, down) || errors.Is(err, ErrAuthFailed) {
		t.Fatalf("failing directory: %v", err)
	}
}
