package pgaccounts

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/accounts"
)

// AddAlias makes mail to from go to to, with the rules of the SQLite
// directory: from is "local@domain" or "@domain" (the catch-all) of a local
// domain and not a user; to is a local user or alias, or an external
// address that passes accounts.CheckForward.
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
		return newErr(accounts.ErrInvalid, "alias "+src+" cannot point to itself")
	}
	return d.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
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
		if ok, err := exists(ctx, tx, `SELECT 1 FROM accounts_users WHERE address = $1`, src); err != nil {
			return err
		} else if ok {
			return newErr(accounts.ErrExists, src+" is a user; an alias with that address would never be used")
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM accounts_aliases WHERE source = $1 AND target = $2`, src, dst); err != nil {
			return err
		} else if ok {
			return newErr(accounts.ErrExists, "alias "+src+" -> "+dst+" already exists")
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts_aliases (source, target, domain) VALUES ($1, $2, $3)`, src, dst, srcDomain); err != nil {
			return dbErr("adding alias "+src+" -> "+dst, err)
		}
		return nil
	})
}

// requireTarget checks that a local alias target is a user or an alias.
func requireTarget(ctx context.Context, tx pgx.Tx, src, dst string) error {
	ok, err := exists(ctx, tx, `SELECT 1 FROM accounts_users WHERE address = $1 UNION ALL SELECT 1 FROM accounts_aliases WHERE source = $1 LIMIT 1`, dst)
	if err != nil {
		return err
	}
	if !ok {
		return newErr(accounts.ErrNotFound, "cannot alias "+src+" to "+dst+": no user or alias "+dst)
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
	return d.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM accounts_aliases WHERE source = $1 AND target = $2`, src, dst)
		if err != nil {
			return dbErr("removing alias "+src+" -> "+dst, err)
		}
		if tag.RowsAffected() == 0 {
			return newErr(accounts.ErrNotFound, "no alias "+src+" -> "+dst)
		}
		return nil
	})
}

// ListAliases returns the aliases of domain (by their From), or of all
// domains when domain is "", sorted. ErrNotFound if domain is not local.
func (d *Directory) ListAliases(ctx context.Context, domain string) ([]Alias, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	query := `SELECT source, target FROM accounts_aliases ORDER BY domain, source, target`
	var args []any
	if domain != "" {
		dom, err := accounts.NormaliseDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := requireDomain(ctx, d.pool, dom); err != nil {
			return nil, err
		}
		query = `SELECT source, target FROM accounts_aliases WHERE domain = $1 ORDER BY source, target`
		args = append(args, dom)
	}
	rows, err := d.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, dbErr("listing aliases", err)
	}
	aliases, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Alias])
	if err != nil {
		return nil, dbErr("listing aliases", err)
	}
	return aliases, nil
}

// Resolve returns the mailboxes mail to address is delivered to, by the
// rules of accounts.Resolve, from the snapshot or SQL.
func (d *Directory) Resolve(ctx context.Context, address string) ([]User, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	src, err := d.source(ctx)
	if err != nil {
		return nil, err
	}
	return accounts.Resolve(ctx, src, d.log, address)
}

// CanSendAs reports whether user may use from as its sender, by the rules
// of accounts.CanSendAs.
func (d *Directory) CanSendAs(ctx context.Context, user, from string) (bool, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	src, err := d.source(ctx)
	if err != nil {
		return false, err
	}
	return accounts.CanSendAs(ctx, src, d.log, user, from)
}

// sqlSource reads what resolution needs from the database.
type sqlSource struct{ d *Directory }

func (s sqlSource) User(ctx context.Context, addr string) (User, bool, error) {
	u, err := s.d.scanUser(s.d.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM accounts_users WHERE address = $1`, addr))
	switch {
	case err == nil:
		return u, true, nil
	case err == pgx.ErrNoRows:
		return User{}, false, nil
	}
	return User{}, false, dbErr("reading user "+addr, err)
}

func (s sqlSource) Targets(ctx context.Context, source string) ([]string, error) {
	rows, err := s.d.pool.Query(ctx, `SELECT target FROM accounts_aliases WHERE source = $1 ORDER BY target`, source)
	if err != nil {
		return nil, dbErr("reading alias "+source, err)
	}
	targets, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbErr("reading alias "+source, err)
	}
	return targets, nil
}

func (s sqlSource) IsLocalDomain(ctx context.Context, domain string) (bool, error) {
	return isLocalDomain(ctx, s.d.pool, domain)
}
