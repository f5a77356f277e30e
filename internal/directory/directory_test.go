package directory

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/agua-mail/agua/internal/passwd"
)

const testQuota = 1 << 20

func openTest(t *testing.T) (*Directory, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agua.db")
	d, err := Open(path, Options{DefaultQuota: testQuota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("got error %v, want %v", err, kind)
	}
}

func TestOpenOptions(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{})
	wantErr(t, err, ErrInvalid)
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agua.db")
	d, err := Open(path, Options{DefaultQuota: testQuota})
	must(t, err)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.Close())
	d, err = Open(path, Options{DefaultQuota: testQuota})
	must(t, err)
	defer d.Close()
	got, err := d.ListDomains(ctx)
	must(t, err)
	if !slices.Equal(got, []string{"example.org"}) {
		t.Fatalf("domains after reopen = %v", got)
	}
}

// The behaviour of domains, users, aliases, Resolve, CanSendAs and
// Authenticate is the accounts contract's: TestConformance runs its suite
// (internal/accounts/accountstest). The tests here are what is this
// backend's own: IsLocalDomain, operator messages, the hasher, SQLite files.

func TestIsLocalDomain(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, " Example.ORG "))
	ok, err := d.IsLocalDomain(ctx, "EXAMPLE.org")
	must(t, err)
	if !ok {
		t.Error("example.org not local")
	}
	ok, err = d.IsLocalDomain(ctx, "other.org")
	must(t, err)
	if ok {
		t.Error("other.org local")
	}
}

// TestOperatorMessages: errors tell the operator what to do.
func TestOperatorMessages(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "alice@example.org", "pw", 0))
	err := d.AddUser(ctx, "a@nowhere.org", "pw", 0)
	wantErr(t, err, ErrNotFound)
	if !strings.Contains(err.Error(), "agua domain add") {
		t.Errorf("message %q does not say how to add the domain", err)
	}
	err = d.AddAlias(ctx, "x@example.org", "some%one@gmail.com")
	wantErr(t, err, ErrInvalid)
	if !strings.Contains(err.Error(), "percent") && !strings.Contains(err.Error(), "relay routing") {
		t.Errorf("external target message: %q", err)
	}
}

// TestAuthenticateCancelled: a cancelled context is honoured while waiting
// for the hasher.
func TestAuthenticateCancelled(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "alice@example.org", "battery staple", 0))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	release, err := d.hasher.Acquire(ctx, d.hasher.Cap())
	must(t, err)
	defer release()
	_, err = d.Authenticate(cctx, "alice@example.org", "battery staple")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("with a full hasher and cancelled ctx: %v", err)
	}
}

func TestStoredHashFormats(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "argon@example.org", "pw", 0))

	var hash string
	must(t, d.db.QueryRowContext(ctx, `SELECT password FROM users WHERE address = ?`, "argon@example.org").Scan(&hash))
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Count(hash, "$") != 5 {
		t.Errorf("stored hash %q is not an argon2id PHC string with OWASP parameters", hash)
	}

	// bcrypt hashes with each prefix, as an import would store them.
	b, err := bcrypt.GenerateFromPassword([]byte("imported"), bcrypt.MinCost)
	must(t, err)
	for i, h := range []string{
		string(b),
		"$2a$" + string(b[4:]),
		"$2y$" + string(b[4:]),
	} {
		addr := []string{"b1@example.org", "b2@example.org", "b3@example.org"}[i]
		must(t, d.AddUser(ctx, addr, "placeholder", 0))
		_, err := d.db.ExecContext(ctx, `UPDATE users SET password = ? WHERE address = ?`, h, addr)
		must(t, err)
		if _, err := d.Authenticate(ctx, addr, "imported"); err != nil {
			t.Errorf("bcrypt %s: %v", h[:4], err)
		}
		if _, err := d.Authenticate(ctx, addr, "wrong"); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("bcrypt %s wrong password: %v", h[:4], err)
		}
	}

	// An argon2id hash made elsewhere with other parameters.
	salt := []byte("somesaltsomesalt")
	key := argon2.IDKey([]byte("password"), salt, 3, 4096, 2, 32)
	other := "$argon2id$v=19$m=4096,t=3,p=2$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(key)
	if ok, err := passwd.Verify(other, "password"); err != nil || !ok {
		t.Errorf("argon2id m=4096,t=3,p=2: %v %v", ok, err)
	}
	h, err := passwd.Hash("round trip")
	must(t, err)
	if ok, err := passwd.Verify(h, "round trip"); err != nil || !ok {
		t.Errorf("round trip: %v %v", ok, err)
	}
	if ok, err := passwd.Verify(h, "round trap"); err != nil || ok {
		t.Errorf("round trip mismatch: %v %v", ok, err)
	}
	for _, bad := range []string{"plain", "$1$abc$def", "$argon2id$v=19$m=99999999,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=16$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"} {
		if _, err := passwd.Verify(bad, "x"); err == nil {
			t.Errorf("passwd.Verify(%q) accepted a bad hash", bad)
		}
	}
}

func TestOddPaths(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a b.db", "a%41b.db", "a?b.db", "a#b.db"} {
		d, err := Open(filepath.Join(dir, name), Options{DefaultQuota: testQuota})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d.Close()
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestAuthenticateFlood checks that many concurrent logins queue on the
// hasher and all get their answer.
func TestAuthenticateFlood(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "alice@example.org", "pw", 0))
	var wg sync.WaitGroup
	var ok, failed atomic.Int32
	for i := range 3 * d.hasher.Cap() {
		wg.Go(func() {
			pw := "pw"
			if i%2 == 1 {
				pw = "wrong"
			}
			_, err := d.Authenticate(ctx, "alice@example.org", pw)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrAuthFailed):
				failed.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := 3 * d.hasher.Cap(); int(ok.Load()) != (n+1)/2 || int(failed.Load()) != n/2 {
		t.Errorf("%d ok, %d failed of %d", ok.Load(), failed.Load(), n)
	}
	if d.hasher.InUse() != 0 {
		t.Errorf("%d hasher slots still taken", d.hasher.InUse())
	}
}

// Every connection the directory opens has its page cache bounded to
// cacheKiB, not SQLite's 2,000 KiB: several held at once (the snapshot's
// own, the pool's) to see that it is each one's setting, not one's.
func TestConnectionPageCacheBounded(t *testing.T) {
	d, _ := openTest(t)
	ctx := context.Background()
	var conns []*sql.Conn
	for range 3 {
		c, err := d.db.Conn(ctx)
		must(t, err)
		conns = append(conns, c)
	}
	for i, c := range conns {
		var n int
		must(t, c.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&n))
		if n != -cacheKiB {
			t.Errorf("connection %d: cache_size %d, want %d (KiB)", i, n, -cacheKiB)
		}
		c.Close()
	}
}
