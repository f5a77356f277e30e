package pgaccounts

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/passwd"
)

// AddUser adds a user with password and quota in bytes (0 = the default
// quota). Its domain must be local; ErrExists if the address is already a
// user or an alias.
func (d *Directory) AddUser(ctx context.Context, address, password string, quota int64) error {
	addr, domain, err := accounts.NormaliseAddress(address)
	if err != nil {
		return err
	}
	if err := passwd.CheckNew(password); err != nil {
		return err
	}
	if quota < 0 {
		return newErr(accounts.ErrInvalid, "quota must not be negative (0 means the default quota)")
	}
	// Hash outside the transaction: it takes tens of milliseconds and the
	// write lock is shared with every node.
	hash, err := d.hasher.Hash(ctx, password)
	if err != nil {
		return err
	}
	return d.write(ctx, func(ctx context.Context, tx pgx.Tx) error { return insertUser(ctx, tx, addr, domain, hash, quota) })
}

// ImportUsers adds users with hashes made elsewhere, in one transaction.
func (d *Directory) ImportUsers(ctx context.Context, users []accounts.ImportedUser) error {
	checked, err := accounts.CheckImported(users, passwd.CheckHash)
	if err != nil {
		return err
	}
	return d.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		for _, u := range checked {
			if err := insertUser(ctx, tx, u.Address, u.Domain, u.Hash, u.Quota); err != nil {
				return err
			}
		}
		return nil
	})
}

// insertUser adds a user inside tx: its domain must be local and the
// address neither a user nor an alias yet.
func insertUser(ctx context.Context, tx pgx.Tx, addr, domain, hash string, quota int64) error {
	if err := requireDomain(ctx, tx, domain); err != nil {
		return err
	}
	if ok, err := exists(ctx, tx, `SELECT 1 FROM accounts_users WHERE address = $1`, addr); err != nil {
		return err
	} else if ok {
		return newErr(accounts.ErrExists, "user "+addr+" already exists")
	}
	// A user would shadow the alias (Resolve prefers users), so the
	// operator must choose.
	if ok, err := exists(ctx, tx, `SELECT 1 FROM accounts_aliases WHERE source = $1`, addr); err != nil {
		return err
	} else if ok {
		return newErr(accounts.ErrExists, addr+" is already an alias; remove the alias first")
	}
	if _, err := tx.Exec(ctx, `INSERT INTO accounts_users (address, domain, password, quota) VALUES ($1, $2, $3, $4)`,
		addr, domain, hash, quota); err != nil {
		return dbErr("adding user "+addr, err)
	}
	return nil
}

// SetPassword replaces a user's password. ErrNotFound for an unknown user.
func (d *Directory) SetPassword(ctx context.Context, address, password string) error {
	addr, _, err := accounts.NormaliseAddress(address)
	if err != nil {
		return err
	}
	if err := passwd.CheckNew(password); err != nil {
		return err
	}
	hash, err := d.hasher.Hash(ctx, password)
	if err != nil {
		return err
	}
	err = d.updateUser(ctx, addr, `UPDATE accounts_users SET password = $2 WHERE address = $1`, hash)
	d.forgetLogin(addr)
	return err
}

// SetQuota sets a user's quota in bytes (0 = the default quota).
func (d *Directory) SetQuota(ctx context.Context, address string, quota int64) error {
	addr, _, err := accounts.NormaliseAddress(address)
	if err != nil {
		return err
	}
	if quota < 0 {
		return newErr(accounts.ErrInvalid, "quota must not be negative (0 means the default quota)")
	}
	return d.updateUser(ctx, addr, `UPDATE accounts_users SET quota = $2 WHERE address = $1`, quota)
}

// RemoveUser removes a user. Its mail is left alone (the caller owns the
// store) and aliases pointing at it stay until removed; Resolve skips them.
func (d *Directory) RemoveUser(ctx context.Context, address string) error {
	addr, _, err := accounts.NormaliseAddress(address)
	if err != nil {
		return err
	}
	err = d.updateUser(ctx, addr, `DELETE FROM accounts_users WHERE address = $1`)
	d.forgetLogin(addr)
	return err
}

func (d *Directory) forgetLogin(addr string) {
	if d.cache != nil {
		d.cache.Forget(addr)
	}
}

// updateUser runs a statement ($1 is the address) that must touch exactly
// the user addr.
func (d *Directory) updateUser(ctx context.Context, addr, query string, args ...any) error {
	return d.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, query, append([]any{addr}, args...)...)
		if err != nil {
			return dbErr("updating user "+addr, err)
		}
		if tag.RowsAffected() == 0 {
			return newErr(accounts.ErrNotFound, "no user "+addr)
		}
		return nil
	})
}

const userColumns = `address, domain, quota, created`

// user completes a user read from the database.
func (d *Directory) user(addr, domain string, quotaSet int64, created time.Time) User {
	u := User{Address: addr, Domain: domain, QuotaSet: quotaSet, Quota: quotaSet, Created: created}
	if u.Quota == 0 {
		u.Quota = d.defaultQuota
	}
	return u
}

func (d *Directory) scanUser(row pgx.Row) (User, error) {
	var addr, domain string
	var quota int64
	var created time.Time
	if err := row.Scan(&addr, &domain, &quota, &created); err != nil {
		return User{}, err
	}
	return d.user(addr, domain, quota, created), nil
}

// GetUser returns a user. ErrNotFound for an unknown user.
func (d *Directory) GetUser(ctx context.Context, address string) (User, error) {
	addr, _, err := accounts.NormaliseAddress(address)
	if err != nil {
		return User{}, err
	}
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	u, ok, err := sqlSource{d}.User(ctx, addr)
	if err == nil && !ok {
		err = newErr(accounts.ErrNotFound, "no user "+addr)
	}
	return u, err
}

// ListUsers returns the users of domain, or of all domains when domain is "",
// sorted by address. ErrNotFound if domain is not local.
func (d *Directory) ListUsers(ctx context.Context, domain string) ([]User, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	query := `SELECT ` + userColumns + ` FROM accounts_users ORDER BY domain, address`
	var args []any
	if domain != "" {
		dom, err := accounts.NormaliseDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := requireDomain(ctx, d.pool, dom); err != nil {
			return nil, err
		}
		query = `SELECT ` + userColumns + ` FROM accounts_users WHERE domain = $1 ORDER BY address`
		args = append(args, dom)
	}
	rows, err := d.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, dbErr("listing users", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (User, error) { return d.scanUser(row) })
	if err != nil {
		return nil, dbErr("listing users", err)
	}
	return users, nil
}

// Authenticate checks a user's password. It returns ErrAuthFailed for a
// wrong password, an unknown user and a malformed address alike, and does the
// same hashing work in every case so that timing does not tell them apart.
// Only a repeat of a recent successful login (passwd.Cache) skips the hash.
// Other errors (the database down: pg.ErrUnavailable; ctx; a corrupt stored
// hash) are returned as they are: the client must hear "try later", never
// "wrong password".
func (d *Directory) Authenticate(ctx context.Context, address, password string) (User, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	addr, _, err := accounts.NormaliseAddress(address)
	usable := err == nil && passwd.Usable(password)
	if usable {
		if u, ok, err := d.cachedLogin(ctx, addr, password); err != nil || ok {
			return u, err
		}
	}
	var user User
	hash, err := d.hasher.Check(ctx, password, usable, func() (string, bool, error) {
		stored, u, found, err := d.authUser(ctx, addr)
		user = u
		return stored, found, err
	})
	if err != nil {
		return User{}, err
	}
	if d.cache != nil {
		d.cache.Put(addr, password, passwd.Fingerprint([]byte(hash)))
	}
	return user, nil
}

// cachedLogin answers a repeat of a recent successful login from the cache,
// against the snapshot, or against the stored hash read from SQL when there
// is no snapshot. ok is false when the cache cannot answer.
func (d *Directory) cachedLogin(ctx context.Context, addr, password string) (u User, ok bool, err error) {
	if d.cache == nil {
		return User{}, false, nil
	}
	src, err := d.source(ctx)
	if err != nil {
		return User{}, false, err
	}
	if snap, isSnap := src.(*snapshot); isSnap {
		r, known := snap.users[addr]
		if !known || !d.cache.Hit(addr, password, r.pwFP) {
			return User{}, false, nil
		}
		return r.user, true, nil
	}
	stored, u, found, err := d.authUser(ctx, addr)
	if err != nil || !found || !d.cache.Hit(addr, password, passwd.Fingerprint([]byte(stored))) {
		return User{}, false, err
	}
	return u, true, nil
}

// authUser reads a user and its stored password hash. found is false for an
// unknown user.
func (d *Directory) authUser(ctx context.Context, addr string) (stored string, user User, found bool, err error) {
	var address, domain string
	var quota int64
	var created time.Time
	err = d.pool.QueryRow(ctx, `SELECT `+userColumns+`, password FROM accounts_users WHERE address = $1`, addr).
		Scan(&address, &domain, &quota, &created, &stored)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", User{}, false, nil
	case err != nil:
		return "", User{}, false, dbErr("reading user "+addr, err)
	}
	return stored, d.user(address, domain, quota, created), true, nil
}
