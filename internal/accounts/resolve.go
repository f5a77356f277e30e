package accounts

import (
	"context"
	"log/slog"
	"strings"
)

// MaxAliasDepth bounds how many aliases Resolve follows in a chain.
const MaxAliasDepth = 8

// Source is what alias resolution reads of a backend: its tables, or an
// in-memory copy of them. Addresses given to it are normalised.
type Source interface {
	// User returns the user addr; ok is false when there is none.
	User(ctx context.Context, addr string) (u User, ok bool, err error)
	// Targets returns the targets of the alias source ("a@d" or "@d"),
	// sorted; the caller never modifies them.
	Targets(ctx context.Context, source string) ([]string, error)
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
}

// Resolve is Lookup.Resolve over src, the rules every backend shares: the
// user with that address; else the targets of the exact alias, followed
// through chains up to MaxAliasDepth deep and deduplicated; else the
// domain's catch-all. Alias targets outside the local domains come back as
// User{Forward: true}. ErrNotLocal if the domain is not local,
// ErrNoSuchUser if it is but nothing matches (including aliases that lead
// nowhere, such as a loop).
func Resolve(ctx context.Context, src Source, log *slog.Logger, address string) ([]User, error) {
	addr, domain, err := NormaliseAddress(address)
	if err != nil {
		return nil, err
	}
	// Fast path for the common case: a user's address. A user implies a
	// local domain (a domain with users cannot be removed).
	if u, ok, err := src.User(ctx, addr); err != nil {
		return nil, err
	} else if ok {
		return []User{u}, nil
	}
	if ok, err := src.IsLocalDomain(ctx, domain); err != nil {
		return nil, err
	} else if !ok {
		return nil, NewError(ErrNotLocal, "domain "+domain+" is not local")
	}
	r := resolver{src: src, log: log, seen: map[string]bool{}, found: map[string]bool{}}
	if err := r.expand(ctx, addr, 0, true); err != nil {
		return nil, err
	}
	if len(r.users) == 0 {
		return nil, NewError(ErrNoSuchUser, "no mailbox for "+addr)
	}
	return r.users, nil
}

// CanSendAs is Lookup.CanSendAs over src: from is the user itself, or an
// exact alias (not a catch-all) that resolves to the user.
func CanSendAs(ctx context.Context, src Source, log *slog.Logger, user, from string) (bool, error) {
	u, _, err := NormaliseAddress(user)
	if err != nil {
		return false, err
	}
	f, _, err := NormaliseAddress(from)
	if err != nil {
		return false, err
	}
	if f == u {
		return true, nil
	}
	// Only an exact alias grants the right: owning the catch-all of a domain
	// must not let a user send as every address of it.
	targets, err := src.Targets(ctx, f)
	if err != nil || len(targets) == 0 {
		return false, err
	}
	r := resolver{src: src, log: log, seen: map[string]bool{f: true}, found: map[string]bool{}}
	for _, t := range targets {
		if err := r.expand(ctx, t, 1, false); err != nil {
			return false, err
		}
	}
	return r.found[u], nil
}

// resolver walks aliases for one Resolve call.
type resolver struct {
	src   Source
	log   *slog.Logger
	seen  map[string]bool // addresses already expanded (loop guard)
	found map[string]bool // users already in users
	users []User
}

// expand adds the users that addr delivers to. The catch-all applies to the
// address asked for and to alias targets alike: it is how the domain treats
// any address it does not otherwise know.
func (r *resolver) expand(ctx context.Context, addr string, depth int, top bool) error {
	if r.seen[addr] {
		// A loop, or two paths to the same address (a→b→x, a→c→x).
		return nil
	}
	r.seen[addr] = true
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	if !top {
		local, err := r.src.IsLocalDomain(ctx, domain)
		if err != nil {
			return err
		}
		if !local {
			// An external target: forwarded, not followed further.
			if !r.found[addr] {
				r.found[addr] = true
				r.users = append(r.users, User{Address: addr, Domain: domain, Forward: true})
			}
			return nil
		}
	}
	u, ok, err := r.src.User(ctx, addr)
	switch {
	case err != nil:
		return err
	case ok:
		if !r.found[u.Address] {
			r.found[u.Address] = true
			r.users = append(r.users, u)
		}
		return nil
	}
	targets, err := r.src.Targets(ctx, addr)
	if err != nil {
		return err
	}
	if len(targets) == 0 {
		if targets, err = r.src.Targets(ctx, "@"+domain); err != nil {
			return err
		}
	}
	if len(targets) == 0 {
		if !top {
			r.log.Warn("alias target leads nowhere", "address", addr)
		}
		return nil
	}
	if depth >= MaxAliasDepth {
		r.log.Warn("alias chain too deep", "address", addr, "limit", MaxAliasDepth)
		return nil
	}
	for _, t := range targets {
		if err := r.expand(ctx, t, depth+1, false); err != nil {
			return err
		}
	}
	return nil
}
