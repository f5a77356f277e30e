package directory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

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
		return newErr(ErrInvalid, "quota must not be negative (0 means the default quota)")
	}
	// Hash outside the transaction: it takes tens of milliseconds and the
	// write lock is shared with every other process.
	hash, err := d.hasher.Hash(ctx, password)
	if err != nil {
		return err
	}
	return d.tx(ctx, func(tx *sql.Tx) error { return insertUser(ctx, tx, addr, domain, hash, quota) })
}

// ImportUsers adds users with hashes made elsewhere, in one transaction.
func (d *Directory) ImportUsers(ctx context.Context, users []accounts.ImportedUser) error {
	checked, err := accounts.CheckImported(users, passwd.CheckHash)
	if err != nil {
		return err
	}
	return d.tx(ctx, func(tx *sql.Tx) error {
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
func insertUser(ctx context.Context, tx *sql.Tx, addr, domain, hash string, quota int64) error {
	if err := requireDomain(ctx, tx, domain); err != nil {
		return err
	}
	if ok, err := exists(ctx, tx, `SELECT 1 FROM users WHERE address = ?`, addr); err != nil {
		return err
	} else if ok {
		return newErr(ErrExists, "user "+addr+" already exists")
	}
	// A user would shadow the alias (Resolve prefers users), so the
	// operator must choose.
	if ok, err := exists(ctx, tx, `SELECT 1 FROM aliases WHERE source = ?`, addr); err != nil {
		return err
	} else if ok {
		return newErr(ErrExists, addr+" is already an alias; remove the alias first")
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO users (address, domain, password, quota, created) VALUES (?, ?, ?, ?, ?)`,
		addr, domain, hash, quota, time.Now().Unix()); err != nil {
		return fmt.Errorf("adding user %s: %w", addr, err)
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
	err = d.updateUser(ctx, addr, `UPDATE users SET password = ? WHERE address = ?`, hash, addr)
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
		return newErr(ErrInvalid, "quota must not be negative (0 means the default quota)")
	}
	return d.updateUser(ctx, addr, `UPDATE users SET quota = ? WHERE address = ?`, quota, addr)
}

// RemoveUser removes a user. Its mail is left alone (the caller owns the
// store) and aliases pointing at it stay until removed; Resolve skips them.
func (d *Directory) RemoveUser(ctx context.Context, address string) error {
	addr, _, err := accounts.NormaliseAddress(address)
	if err != nil {
		return err
	}
	err = d.updateUser(ctx, addr, `DELETE FROM users WHERE address = ?`, addr)
	d.forgetLogin(addr)
	return err
}

// forgetLogin drops addr's cached login after a change through this
// Directory. (Changes by other processes are caught by the snapshot, or by
// the stored hash itself.)
func (d *Directory) forgetLogin(addr string) {
	if d.cache != nil {
		d.cache.Forget(addr)
	}
}

// updateUser runs a statement that must touch exactly the user addr.
func (d *Directory) updateUser(ctx context.Context, addr, query string, args ...any) error {
	res, err := d.db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("updating user %s: %w", addr, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("updating user %s: %w", addr, err)
	}
	if n == 0 {
		return newErr(ErrNotFound, "no user "+addr)
	}
	return nil
}

const userColumns = `address, domain, quota, created`

func (d *Directory) scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	var created int64
	if err := row.Scan(&u.Address, &u.Domain, &u.QuotaSet, &created); err != nil {
		return User{}, err
	}
	u.Created = time.Unix(created, 0)
	u.Quota = u.QuotaSet
	if u.Quota == 0 {
		u.Quota = d.defaultQuota
	}
	return u, nil
}

// GetUser returns a user. ErrNotFound for an unknown user.
func (d *Directory) GetUser(ctx context.Context, address string) (User, error) {
	addr, _, err := accounts.NormaliseAddress(address)
	if err != nil {
		return User{}, err
	}
	return d.getUser(ctx, d.q, addr)
}

func (d *Directory) getUser(ctx context.Context, q querier, addr string) (User, error) {
	u, err := d.scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE address = ?`, addr))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return User{}, newErr(ErrNotFound, "no user "+addr)
	case err != nil:
		return User{}, fmt.Errorf("reading user %s: %w", addr, err)
	}
	return u, nil
}

// ListUsers returns the users of domain, or of all domains when domain is "",
// sorted by address. ErrNotFound if domain is not local.
func (d *Directory) ListUsers(ctx context.Context, domain string) ([]User, error) {
	query := `SELECT ` + userColumns + ` FROM users ORDER BY domain, address`
	var args []any
	if domain != "" {
		dom, err := accounts.NormaliseDomain(domain)
		if err != nil {
			return nil, err
		}
		if err := requireDomain(ctx, d.q, dom); err != nil {
			return nil, err
		}
		query = `SELECT ` + userColumns + ` FROM users WHERE domain = ? ORDER BY address`
		args = append(args, dom)
	}
	rows, err := d.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	defer rows.Close()
	var users []User
	for rows.Next() {
		u, err := d.scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("listing users: %w", err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	return users, nil
}

// Authenticate checks a user's password. It returns ErrAuthFailed for a
// wrong password, an unknown user and a malformed address alike, and does the
// same hashing work in every case so that timing does not tell them apart.
// Only a repeat of a recent successful login (passwd.Cache) skips the hash.
// Other errors (database, ctx, a corrupt stored hash) are returned as they
// are: they are the operator's problem, not the client's.
func (d *Directory) Authenticate(ctx context.Context, address, password string) (User, error) {
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

// cachedLogin answers a repeat of a recent successful login from the
// cache (passwd.Cache), against the current snapshot, or against the stored
// hash read from SQL when there is no snapshot. ok is false when the cache
// cannot answer; the login is then verified.
func (d *Directory) cachedLogin(ctx context.Context, addr, password string) (u User, ok bool, err error) {
	if d.cache == nil {
		return User{}, false, nil
	}
	src, err := d.source(ctx)
	if err != nil {
		return User{}, false, err
	}
	if s, isSnap := src.(snapSource); isSnap {
		r, known := s.s.users[addr]
		if !known || !d.cache.Hit(addr, password, r.pwFP) {
			return User{}, false, nil
		}
		return r.user(d.defaultQuota), true, nil
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
	row := d.q.QueryRowContext(ctx, `SELECT `+userColumns+`, password FROM users WHERE address = ?`, addr)
	var created int64
	err = row.Scan(&user.Address, &user.Domain, &user.QuotaSet, &created, &stored)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", User{}, false, nil
	case err != nil:
		return "", User{}, false, fmt.Errorf("reading user %s: %w", addr, err)
	}
	user.Created = time.Unix(created, 0)
	user.Quota = user.QuotaSet
	if user.Quota == 0 {
		user.Quota = d.defaultQuota
	}
	return stored, user, true, nil
}
