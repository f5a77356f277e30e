package directory

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
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

func addresses(users []User) []string {
	var out []string
	for _, u := range users {
		out = append(out, u.Address)
	}
	slices.Sort(out)
	return out
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

func TestDomains(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, " Example.ORG "))
	must(t, d.AddDomain(ctx, "b.example"))
	wantErr(t, d.AddDomain(ctx, "example.org"), ErrExists)
	for _, bad := range []string{"", "a..b", "-a.b", "a-.b", "a b.c", "ex_ample.org", "münchen.de", strings.Repeat("a", 64) + ".org"} {
		wantErr(t, d.AddDomain(ctx, bad), ErrInvalid)
	}
	got, err := d.ListDomains(ctx)
	must(t, err)
	if !slices.Equal(got, []string{"b.example", "example.org"}) {
		t.Fatalf("ListDomains = %v", got)
	}
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

	must(t, d.AddUser(ctx, "a@example.org", "pw", 0))
	wantErr(t, d.RemoveDomain(ctx, "example.org"), ErrNotEmpty)
	must(t, d.RemoveUser(ctx, "a@example.org"))
	must(t, d.AddUser(ctx, "b@b.example", "pw", 0))
	must(t, d.AddAlias(ctx, "@example.org", "b@b.example"))
	wantErr(t, d.RemoveDomain(ctx, "example.org"), ErrNotEmpty)
	must(t, d.RemoveAlias(ctx, "@example.org", "b@b.example"))
	must(t, d.RemoveDomain(ctx, "example.org"))
	wantErr(t, d.RemoveDomain(ctx, "example.org"), ErrNotFound)
}

func TestUsers(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddDomain(ctx, "example.net"))

	err := d.AddUser(ctx, "a@nowhere.org", "pw", 0)
	wantErr(t, err, ErrNotFound)
	if !strings.Contains(err.Error(), "agua domain add") {
		t.Errorf("message %q does not say how to add the domain", err)
	}
	must(t, d.AddUser(ctx, " Alice@Example.ORG", "pw", 0))
	wantErr(t, d.AddUser(ctx, "alice@example.org", "pw", 0), ErrExists)
	wantErr(t, d.AddUser(ctx, "b@example.org", "", 0), ErrInvalid)
	wantErr(t, d.AddUser(ctx, "b@example.org", "pw", -1), ErrInvalid)
	for _, bad := range []string{"", "noat", "a@b@example.org", "@example.org", "a@", "a b@example.org", "a\x01@example.org", ".a@example.org", "a..b@example.org", "a@exa mple.org"} {
		wantErr(t, d.AddUser(ctx, bad, "pw", 0), ErrInvalid)
	}
	must(t, d.AddUser(ctx, "Ünïcode@example.org", "pw", 5000)) // RFC 6531
	must(t, d.AddUser(ctx, "bob@example.net", "pw", 0))

	u, err := d.GetUser(ctx, "ALICE@example.org")
	must(t, err)
	if u.Address != "alice@example.org" || u.Domain != "example.org" || u.Quota != testQuota || u.QuotaSet != 0 {
		t.Errorf("GetUser = %+v", u)
	}
	if time.Since(u.Created) > time.Hour || u.Created.IsZero() {
		t.Errorf("Created = %v", u.Created)
	}
	u, err = d.GetUser(ctx, "ünïcode@example.org")
	must(t, err)
	if u.Quota != 5000 || u.QuotaSet != 5000 {
		t.Errorf("GetUser = %+v", u)
	}
	_, err = d.GetUser(ctx, "nobody@example.org")
	wantErr(t, err, ErrNotFound)

	must(t, d.SetQuota(ctx, "alice@example.org", 42))
	u, err = d.GetUser(ctx, "alice@example.org")
	must(t, err)
	if u.Quota != 42 || u.QuotaSet != 42 {
		t.Errorf("after SetQuota: %+v", u)
	}
	must(t, d.SetQuota(ctx, "alice@example.org", 0))
	u, _ = d.GetUser(ctx, "alice@example.org")
	if u.Quota != testQuota {
		t.Errorf("after SetQuota 0: %+v", u)
	}
	wantErr(t, d.SetQuota(ctx, "alice@example.org", -5), ErrInvalid)
	wantErr(t, d.SetQuota(ctx, "nobody@example.org", 5), ErrNotFound)

	all, err := d.ListUsers(ctx, "")
	must(t, err)
	if got := addresses(all); !slices.Equal(got, []string{"alice@example.org", "bob@example.net", "ünïcode@example.org"}) {
		t.Errorf("ListUsers all = %v", got)
	}
	some, err := d.ListUsers(ctx, "Example.NET")
	must(t, err)
	if got := addresses(some); !slices.Equal(got, []string{"bob@example.net"}) {
		t.Errorf("ListUsers example.net = %v", got)
	}
	_, err = d.ListUsers(ctx, "nowhere.org")
	wantErr(t, err, ErrNotFound)

	must(t, d.RemoveUser(ctx, "bob@example.net"))
	wantErr(t, d.RemoveUser(ctx, "bob@example.net"), ErrNotFound)
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "alice@example.org", "correct horse", 0))

	u, err := d.Authenticate(ctx, "Alice@Example.org", "correct horse")
	must(t, err)
	if u.Address != "alice@example.org" || u.Quota != testQuota {
		t.Errorf("Authenticate = %+v", u)
	}
	for _, c := range []struct{ addr, pw string }{
		{"alice@example.org", "wrong"},
		{"alice@example.org", ""},
		{"alice@example.org", strings.Repeat("x", 5000)},
		{"nobody@example.org", "correct horse"},
		{"nobody@other.org", "x"},
		{"not an address", "x"},
	} {
		_, err := d.Authenticate(ctx, c.addr, c.pw)
		wantErr(t, err, ErrAuthFailed)
	}

	must(t, d.SetPassword(ctx, "alice@example.org", "battery staple"))
	_, err = d.Authenticate(ctx, "alice@example.org", "correct horse")
	wantErr(t, err, ErrAuthFailed)
	_, err = d.Authenticate(ctx, "alice@example.org", "battery staple")
	must(t, err)
	wantErr(t, d.SetPassword(ctx, "alice@example.org", ""), ErrInvalid)
	wantErr(t, d.SetPassword(ctx, "nobody@example.org", "x"), ErrNotFound)

	// A cancelled context is honoured while waiting for the hasher.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for range cap(d.hasher.sem) {
		d.hasher.sem <- struct{}{}
	}
	_, err = d.Authenticate(cctx, "alice@example.org", "battery staple")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("with a full hasher and cancelled ctx: %v", err)
	}
	for range cap(d.hasher.sem) {
		<-d.hasher.sem
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
	other := "$argon2id$v=19$m=4096,t=3,p=2$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
	if ok, err := verifyPassword(other, "password"); err != nil || !ok {
		t.Errorf("argon2id m=4096,t=3,p=2: %v %v", ok, err)
	}
	h, err := hashPassword("round trip")
	must(t, err)
	if ok, err := verifyPassword(h, "round trip"); err != nil || !ok {
		t.Errorf("round trip: %v %v", ok, err)
	}
	if ok, err := verifyPassword(h, "round trap"); err != nil || ok {
		t.Errorf("round trip mismatch: %v %v", ok, err)
	}
	for _, bad := range []string{"plain", "$1$abc$def", "$argon2id$v=19$m=99999999,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=16$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"} {
		if _, err := verifyPassword(bad, "x"); err == nil {
			t.Errorf("verifyPassword(%q) accepted a bad hash", bad)
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
	for i := range 3 * cap(d.hasher.sem) {
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
	if n := 3 * cap(d.hasher.sem); int(ok.Load()) != (n+1)/2 || int(failed.Load()) != n/2 {
		t.Errorf("%d ok, %d failed of %d", ok.Load(), failed.Load(), n)
	}
	if len(d.hasher.sem) != 0 {
		t.Errorf("%d hasher slots still taken", len(d.hasher.sem))
	}
}
