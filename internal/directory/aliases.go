package directory

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// maxAliasDepth bounds how many aliases Resolve follows in a chain.
const maxAliasDepth = 8

// AddAlias makes mail to from go to to. from is "local@domain", or
// "@domain" for the catch-all of domain, which applies to addresses of domain
// that are neither users nor aliases. from's domain must be local. to is a
// local user or alias, or an address in a domain that is not local: mail is
// then forwarded to it through the outbound queue (with SRS, see
// internal/srs). An external target's local part may not carry the old
// routing syntaxes that make relays of careless servers: "%" (the
// percent hack) and "!" (UUCP bang paths); source routes and address
// literals do not pass the address syntax check at all.
func (d *Directory) AddAlias(ctx context.Context, from, to string) error {
	src, srcDomain, err := normaliseAliasSource(from)
	if err != nil {
		return err
	}
	dst, dstDomain, err := normaliseAddress(to)
	if err != nil {
		return err
	}
	if src == dst {
		return newErr(ErrInvalid, "alias "+src+" cannot point to itself")
	}
	return d.tx(ctx, func(tx *sql.Tx) error {
		if err := requireDomain(ctx, tx, srcDomain); err != nil {
			return err
		}
		local, err := isLocalDomain(ctx, tx, dstDomain)
		if err != nil {
			return err
		}
		if !local {
			if err := checkForward(src, dst); err != nil {
				return err
			}
		} else if err := requireTarget(ctx, tx, src, dst); err != nil {
			return err
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM users WHERE address = ?`, src); err != nil {
			return err
		} else if ok {
			return newErr(ErrExists, src+" is a user; an alias with that address would never be used")
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM aliases WHERE source = ? AND target = ?`, src, dst); err != nil {
			return err
		} else if ok {
			return newErr(ErrExists, "alias "+src+" -> "+dst+" already exists")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO aliases (source, target, domain, created) VALUES (?, ?, ?, ?)`,
			src, dst, srcDomain, time.Now().Unix()); err != nil {
			return fmt.Errorf("adding alias %s -> %s: %w", src, dst, err)
		}
		return nil
	})
}

// checkForward vets an external alias target.
func checkForward(src, dst string) error {
	local := dst[:strings.LastIndexByte(dst, '@')]
	if strings.ContainsAny(local, "%!") {
		return newErr(ErrInvalid, "cannot forward "+src+" to "+dst+": '%' and '!' in a local part are relay routing syntax, not accepted in a forwarding target")
	}
	if !strings.Contains(dst[len(local)+1:], ".") {
		return newErr(ErrInvalid, "cannot forward "+src+" to "+dst+": the domain is not local and has no dot")
	}
	return nil
}

// requireTarget checks that a local alias target is a user or an alias.
func requireTarget(ctx context.Context, tx *sql.Tx, src, dst string) error {
	isUser, err := exists(ctx, tx, `SELECT 1 FROM users WHERE address = ?`, dst)
	if err != nil {
		return err
	}
	isAlias, err := exists(ctx, tx, `SELECT 1 FROM aliases WHERE source = ?`, dst)
	if err != nil {
		return err
	}
	if !isUser && !isAlias {
		return newErr(ErrNotFound, "cannot alias "+src+" to "+dst+": no user or alias "+dst)
	}
	return nil
}

// RemoveAlias removes the alias from -> to. ErrNotFound if there is none.
func (d *Directory) RemoveAlias(ctx context.Context, from, to string) error {
	src, _, err := normaliseAliasSource(from)
	if err != nil {
		return err
	}
	dst, _, err := normaliseAddress(to)
	if err != nil {
		return err
	}
	res, err := d.db.ExecContext(ctx, `DELETE FROM aliases WHERE source = ? AND target = ?`, src, dst)
	if err != nil {
		return fmt.Errorf("removing alias %s -> %s: %w", src, dst, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("removing alias %s -> %s: %w", src, dst, err)
	}
	if n == 0 {
		return newErr(ErrNotFound, "no alias "+src+" -> "+dst)
	}
	return nil
}

// ListAliases returns the aliases of domain (by their From), or of all
// domains when domain is "", sorted. ErrNotFound if domain is not local.
func (d *Directory) ListAliases(ctx context.Context, domain string) ([]Alias, error) {
	query := `SELECT source, target FROM aliases ORDER BY domain, source, target`
	var args []any
	if domain != "" {
		dom, err := normaliseDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := requireDomain(ctx, d.q, dom); err != nil {
			return nil, err
		}
		query = `SELECT source, target FROM aliases WHERE domain = ? ORDER BY source, target`
		args = append(args, dom)
	}
	rows, err := d.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing aliases: %w", err)
	}
	defer rows.Close()
	var aliases []Alias
	for rows.Next() {
		var a Alias
		if err := rows.Scan(&a.From, &a.To); err != nil {
			return nil, fmt.Errorf("listing aliases: %w", err)
		}
		aliases = append(aliases, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing aliases: %w", err)
	}
	return aliases, nil
}

// Resolve returns the local mailboxes that mail to address is delivered to:
// the user with that address; else the targets of the exact alias, followed
// through chains up to 8 deep and deduplicated; else the domain's catch-all.
// Alias targets outside the local domains come back as User{Forward: true}.
// ErrNotLocal if the domain is not ours, ErrNoSuchUser if it is but nothing
// matches (including aliases that lead nowhere, such as a loop).
func (d *Directory) Resolve(ctx context.Context, address string) ([]User, error) {
	addr, domain, err := normaliseAddress(address)
	if err != nil {
		return nil, err
	}
	src, err := d.source(ctx)
	if err != nil {
		return nil, err
	}
	// Fast path for the common case: a user's address. A user implies a
	// local domain (a domain with users cannot be removed).
	if u, ok, err := src.user(ctx, addr); err != nil {
		return nil, err
	} else if ok {
		return []User{u}, nil
	}
	if ok, err := src.isLocalDomain(ctx, domain); err != nil {
		return nil, err
	} else if !ok {
		return nil, newErr(ErrNotLocal, "domain "+domain+" is not local")
	}
	if s, ok := src.(snapSource); ok && s.s.aliases[addr] == nil && s.s.aliases["@"+domain] == nil {
		// No alias and no catch-all: a harvester's guess ends here.
		return nil, newErr(ErrNoSuchUser, "no mailbox for "+addr)
	}
	r := resolver{src: src, log: d.log, seen: map[string]bool{}, found: map[string]bool{}}
	if err := r.expand(ctx, addr, 0, true); err != nil {
		return nil, err
	}
	if len(r.users) == 0 {
		return nil, newErr(ErrNoSuchUser, "no mailbox for "+addr)
	}
	return r.users, nil
}

// source is what Resolve, CanSendAs and IsLocalDomain read: the snapshot
// (snapshot.go) or, without one, the database.
type source interface {
	user(ctx context.Context, addr string) (User, bool, error)
	targets(ctx context.Context, source string) ([]string, error) // sorted; never modified by the caller
	isLocalDomain(ctx context.Context, domain string) (bool, error)
}

// source returns the snapshot when the directory keeps one and it fits,
// else the database.
func (d *Directory) source(ctx context.Context) (source, error) {
	if d.snaps != nil {
		snap, err := d.snaps.current(ctx)
		if err != nil {
			return nil, err
		}
		if snap != nil {
			return snapSource{snap, d.defaultQuota}, nil
		}
	}
	return sqlSource{d}, nil
}

type sqlSource struct{ d *Directory }

func (s sqlSource) user(ctx context.Context, addr string) (User, bool, error) {
	u, err := s.d.getUser(ctx, s.d.q, addr)
	switch {
	case err == nil:
		return u, true, nil
	case isNotFound(err):
		return User{}, false, nil
	}
	return User{}, false, err
}

func (s sqlSource) targets(ctx context.Context, source string) ([]string, error) {
	return s.d.aliasTargets(ctx, source)
}

func (s sqlSource) isLocalDomain(ctx context.Context, domain string) (bool, error) {
	return isLocalDomain(ctx, s.d.q, domain)
}

type snapSource struct {
	s            *snapshot
	defaultQuota int64
}

func (s snapSource) user(_ context.Context, addr string) (User, bool, error) {
	r, ok := s.s.users[addr]
	if !ok {
		return User{}, false, nil
	}
	return r.user(s.defaultQuota), true, nil
}

func (s snapSource) targets(_ context.Context, source string) ([]string, error) {
	return s.s.aliases[source], nil
}

func (s snapSource) isLocalDomain(_ context.Context, domain string) (bool, error) {
	_, ok := s.s.domains[domain]
	return ok, nil
}

// resolver walks aliases for one Resolve call.
type resolver struct {
	src   source
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
		local, err := r.src.isLocalDomain(ctx, domain)
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
	u, ok, err := r.src.user(ctx, addr)
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
	targets, err := r.src.targets(ctx, addr)
	if err != nil {
		return err
	}
	if len(targets) == 0 {
		if targets, err = r.src.targets(ctx, "@"+domain); err != nil {
			return err
		}
	}
	if len(targets) == 0 {
		if !top {
			r.log.Warn("alias target leads nowhere", "address", addr)
		}
		return nil
	}
	if depth >= maxAliasDepth {
		r.log.Warn("alias chain too deep", "address", addr, "limit", maxAliasDepth)
		return nil
	}
	for _, t := range targets {
		if err := r.expand(ctx, t, depth+1, false); err != nil {
			return err
		}
	}
	return nil
}

func isNotFound(err error) bool {
	de, ok := err.(*dirError)
	return ok && de.kind == ErrNotFound
}

func (d *Directory) aliasTargets(ctx context.Context, source string) ([]string, error) {
	rows, err := d.q.QueryContext(ctx, `SELECT target FROM aliases WHERE source = ? ORDER BY target`, source)
	if err != nil {
		return nil, fmt.Errorf("reading alias %s: %w", source, err)
	}
	defer rows.Close()
	var targets []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("reading alias %s: %w", source, err)
		}
		targets = append(targets, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading alias %s: %w", source, err)
	}
	return targets, nil
}

// CanSendAs reports whether the authenticated user may use from as the
// sender address: from is the user itself, or an exact alias (not a
// catch-all) that resolves to the user.
func (d *Directory) CanSendAs(ctx context.Context, user, from string) (bool, error) {
	u, _, err := normaliseAddress(user)
	if err != nil {
		return false, err
	}
	f, _, err := normaliseAddress(from)
	if err != nil {
		return false, err
	}
	if f == u {
		return true, nil
	}
	src, err := d.source(ctx)
	if err != nil {
		return false, err
	}
	// Only an exact alias grants the right: owning the catch-all of a domain
	// must not let a user send as every address of it.
	targets, err := src.targets(ctx, f)
	if err != nil || len(targets) == 0 {
		return false, err
	}
	r := resolver{src: src, log: d.log, seen: map[string]bool{f: true}, found: map[string]bool{}}
	for _, t := range targets {
		if err := r.expand(ctx, t, 1, false); err != nil {
			return false, err
		}
	}
	return r.found[u], nil
}
