package directory

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
)

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
	src, srcDomain, err := accounts.NormaliseAliasSource(from)
	if err != nil {
		return err
	}
	dst, dstDomain, err := accounts.NormaliseAddress(to)
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
			if err := accounts.CheckForward(src, dst); err != nil {
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
	src, _, err := accounts.NormaliseAliasSource(from)
	if err != nil {
		return err
	}
	dst, _, err := accounts.NormaliseAddress(to)
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
		dom, err := accounts.NormaliseDomain(domain)
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

// Resolve returns the local mailboxes that mail to address is delivered to,
// by the rules of accounts.Resolve, from the snapshot or SQL.
func (d *Directory) Resolve(ctx context.Context, address string) ([]User, error) {
	src, err := d.source(ctx)
	if err != nil {
		return nil, err
	}
	return accounts.Resolve(ctx, src, d.log, address)
}

// source is what Resolve, CanSendAs and IsLocalDomain read: the snapshot
// (snapshot.go) or, without one, the database.
type source = accounts.Source

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

func (s sqlSource) User(ctx context.Context, addr string) (User, bool, error) {
	u, err := s.d.getUser(ctx, s.d.q, addr)
	switch {
	case err == nil:
		return u, true, nil
	case isNotFound(err):
		return User{}, false, nil
	}
	return User{}, false, err
}

func (s sqlSource) Targets(ctx context.Context, source string) ([]string, error) {
	return s.d.aliasTargets(ctx, source)
}

func (s sqlSource) IsLocalDomain(ctx context.Context, domain string) (bool, error) {
	return isLocalDomain(ctx, s.d.q, domain)
}

type snapSource struct {
	s            *snapshot
	defaultQuota int64
}

func (s snapSource) User(_ context.Context, addr string) (User, bool, error) {
	r, ok := s.s.users[addr]
	if !ok {
		return User{}, false, nil
	}
	return r.user(s.defaultQuota), true, nil
}

func (s snapSource) Targets(_ context.Context, source string) ([]string, error) {
	return s.s.aliases[source], nil
}

func (s snapSource) IsLocalDomain(_ context.Context, domain string) (bool, error) {
	_, ok := s.s.domains[domain]
	return ok, nil
}

func isNotFound(err error) bool {
	de, ok := err.(*accounts.Error)
	return ok && de.Kind == ErrNotFound
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
// sender address, by the rules of accounts.CanSendAs.
func (d *Directory) CanSendAs(ctx context.Context, user, from string) (bool, error) {
	src, err := d.source(ctx)
	if err != nil {
		return false, err
	}
	return accounts.CanSendAs(ctx, src, d.log, user, from)
}
