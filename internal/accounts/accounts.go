// Package accounts is the contract between agua's mail services and an
// account directory: the value types, the sentinel errors, and two
// interfaces, Lookup (what the mail services ask while serving: authenticate,
// resolve, can-send-as, list domains) and Admin (what the CLI and admin
// verbs change). internal/directory (SQLite) and internal/pgaccounts
// (PostgreSQL) implement both and pass the conformance suite in
// internal/accounts/accountstest, each in its own tests.
//
// The rules that are not storage are here too, so that the backends share
// them rather than copy them: the address syntax (address.go) and alias
// resolution over a backend's Source (resolve.go).
//
// The interfaces are defined here, not in a backend package, so that
// consumers name them and never a backend's concrete type (as CoreDNS's
// plugin.ServiceBackend is implemented by etcd and kubernetes).
//
// Addresses are compared case-insensitively and returned in lower case.
package accounts

import (
	"context"
	"errors"
	"time"
)

// User is one account.
type User struct {
	Address  string    // lower-case local@domain
	Domain   string    // lower-case domain
	Quota    int64     // effective quota in bytes (the default applied)
	QuotaSet int64     // stored quota in bytes, 0 = the default
	Created  time.Time // when the user was added
	// Forward: not a mailbox but an address outside the local domains
	// that an alias forwards to (Resolve only); Quota and Created are zero.
	Forward bool
}

// Alias maps From to To. From is "local@domain", or "@domain" for the
// catch-all of that domain; To is a local address, or an external one
// that mail is forwarded to.
type Alias struct {
	From, To string
}

// Sentinel errors. A backend's errors wrap one of these (with a message for
// the operator); match them with errors.Is.
var (
	ErrExists     = errors.New("already exists")
	ErrNotFound   = errors.New("not found")
	ErrNotEmpty   = errors.New("not empty")
	ErrAuthFailed = errors.New("authentication failed")
	ErrNotLocal   = errors.New("domain is not local")
	ErrNoSuchUser = errors.New("no such user")
	ErrInvalid    = errors.New("invalid")
)

// Error is a backend's error: a message meant for the operator and the
// sentinel it stands for (errors.Is matches the sentinel).
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

// NewError returns an *Error of kind with msg.
func NewError(kind error, msg string) error { return &Error{Kind: kind, Msg: msg} }

// Lookup is what the mail services ask of the accounts while serving.
// Every call reads the backend's current state: a change made through Admin
// (by another process too) applies at once.
type Lookup interface {
	// Authenticate checks a password. ErrAuthFailed for a wrong password,
	// an unknown user and a malformed address alike, at the same cost.
	// Other errors are the backend's own failures.
	Authenticate(ctx context.Context, address, password string) (User, error)
	// Resolve maps an address to the mailboxes it delivers to, through
	// aliases and the domain's catch-all. ErrNotLocal when the domain is
	// not local, ErrNoSuchUser when nothing matches, ErrInvalid for a
	// malformed address.
	Resolve(ctx context.Context, address string) ([]User, error)
	// CanSendAs says whether user may use from as its sender: its own
	// address, or an alias that resolves to it.
	CanSendAs(ctx context.Context, user, from string) (bool, error)
	// ListDomains returns the local domains, sorted.
	ListDomains(ctx context.Context) ([]string, error)
}

// Admin is what the CLI and the admin verbs change.
type Admin interface {
	AddDomain(ctx context.Context, name string) error    // ErrExists, ErrInvalid
	RemoveDomain(ctx context.Context, name string) error // ErrNotFound, ErrNotEmpty
	ListDomains(ctx context.Context) ([]string, error)
	// AddUser adds a user of a local domain; quota 0 means the default.
	AddUser(ctx context.Context, address, password string, quota int64) error // ErrExists, ErrNotFound (domain), ErrInvalid
	SetPassword(ctx context.Context, address, password string) error          // ErrNotFound, ErrInvalid
	SetQuota(ctx context.Context, address string, quota int64) error          // ErrNotFound, ErrInvalid
	RemoveUser(ctx context.Context, address string) error                     // ErrNotFound
	// ImportUsers adds users whose password hashes were made elsewhere
	// (argon2id or bcrypt, passwd.CheckHash), all in one transaction: all
	// of them or, on the first error (as AddUser's, naming the address),
	// none.
	ImportUsers(ctx context.Context, users []ImportedUser) error
	GetUser(ctx context.Context, address string) (User, error) // ErrNotFound
	// ListUsers returns the users of domain ("" for all), sorted by
	// address within each domain. ErrNotFound for a domain that is not local.
	ListUsers(ctx context.Context, domain string) ([]User, error)
	AddAlias(ctx context.Context, from, to string) error    // ErrExists, ErrNotFound, ErrInvalid
	RemoveAlias(ctx context.Context, from, to string) error // ErrNotFound
	// ListAliases returns the aliases of domain ("" for all), sorted.
	ListAliases(ctx context.Context, domain string) ([]Alias, error)
}

// ImportedUser is a user added with a stored password hash (Admin.ImportUsers).
type ImportedUser struct {
	Address string
	Hash    string // an argon2id PHC string or a bcrypt hash
	Quota   int64  // 0: the default quota
}

// Directory is a complete accounts backend.
type Directory interface {
	Lookup
	Admin
	Close() error
}
