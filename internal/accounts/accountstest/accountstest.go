// Package accountstest is the conformance suite of the accounts contract
// (internal/accounts): every backend runs Run in its own tests, so a new one
// (PostgreSQL) behaves as the SQLite directory does for everything the mail
// services and the CLI rely on. It checks behaviour through the interfaces
// only, never a backend's internals.
package accountstest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/passwd"
)

// DefaultQuota is the default quota the suite asks a new backend for.
const DefaultQuota = 1 << 20

// MaxAliasDepth is how many aliases in a chain Resolve must follow.
const MaxAliasDepth = 8

// NewFunc opens a new, empty backend whose users without a quota get
// defaultQuota. The backend is closed by the suite.
type NewFunc func(t *testing.T, defaultQuota int64) accounts.Directory

// Run runs the conformance suite against backends made by newDir.
func Run(t *testing.T, newDir NewFunc) {
	for _, c := range []struct {
		name string
		f    func(*testing.T, accounts.Directory)
	}{
		{"Domains", testDomains},
		{"Users", testUsers},
		{"Authenticate", testAuthenticate},
		{"ImportUsers", testImportUsers},
		{"Aliases", testAliases},
		{"Resolve", testResolve},
		{"CanSendAs", testCanSendAs},
		{"Concurrent", testConcurrent},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDir(t, DefaultQuota)
			t.Cleanup(func() {
				if err := d.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			c.f(t, d)
		})
	}
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
		t.Errorf("got error %v, want %v", err, kind)
	}
}

func addresses(users []accounts.User) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Address
	}
	return out
}

func testDomains(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	if got, err := d.ListDomains(ctx); err != nil || len(got) != 0 {
		t.Fatalf("a new backend lists domains %v, %v", got, err)
	}
	must(t, d.AddDomain(ctx, " Example.ORG "))
	must(t, d.AddDomain(ctx, "b.example"))
	wantErr(t, d.AddDomain(ctx, "example.org"), accounts.ErrExists)
	for _, bad := range []string{"", "a..b", "-a.b", "a-.b", "a b.c", "ex_ample.org", "münchen.de", strings.Repeat("a", 64) + ".org"} {
		wantErr(t, d.AddDomain(ctx, bad), accounts.ErrInvalid)
	}
	got, err := d.ListDomains(ctx)
	must(t, err)
	if !slices.Equal(got, []string{"b.example", "example.org"}) {
		t.Fatalf("ListDomains = %v, want sorted lower case", got)
	}

	// A domain with users or aliases cannot go.
	must(t, d.AddUser(ctx, "a@example.org", "pw", 0))
	wantErr(t, d.RemoveDomain(ctx, "example.org"), accounts.ErrNotEmpty)
	must(t, d.RemoveUser(ctx, "a@example.org"))
	must(t, d.AddUser(ctx, "b@b.example", "pw", 0))
	must(t, d.AddAlias(ctx, "@example.org", "b@b.example"))
	wantErr(t, d.RemoveDomain(ctx, "example.org"), accounts.ErrNotEmpty)
	must(t, d.RemoveAlias(ctx, "@example.org", "b@b.example"))
	must(t, d.RemoveDomain(ctx, "EXAMPLE.org"))
	wantErr(t, d.RemoveDomain(ctx, "example.org"), accounts.ErrNotFound)
	got, err = d.ListDomains(ctx)
	must(t, err)
	if !slices.Equal(got, []string{"b.example"}) {
		t.Fatalf("ListDomains after remove = %v", got)
	}
}

func testUsers(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddDomain(ctx, "example.net"))

	wantErr(t, d.AddUser(ctx, "a@nowhere.org", "pw", 0), accounts.ErrNotFound)
	must(t, d.AddUser(ctx, " Alice@Example.ORG", "pw", 0))
	wantErr(t, d.AddUser(ctx, "alice@example.org", "pw", 0), accounts.ErrExists)
	wantErr(t, d.AddUser(ctx, "b@example.org", "", 0), accounts.ErrInvalid)
	wantErr(t, d.AddUser(ctx, "b@example.org", "pw", -1), accounts.ErrInvalid)
	for _, bad := range []string{"", "noat", "a@b@example.org", "@example.org", "a@", "a b@example.org", "a\x01@example.org", ".a@example.org", "a..b@example.org", "a@exa mple.org"} {
		wantErr(t, d.AddUser(ctx, bad, "pw", 0), accounts.ErrInvalid)
	}
	must(t, d.AddUser(ctx, "Ünïcode@example.org", "pw", 5000)) // RFC 6531
	must(t, d.AddUser(ctx, "bob@example.net", "pw", 0))

	u, err := d.GetUser(ctx, "ALICE@example.org")
	must(t, err)
	if u.Address != "alice@example.org" || u.Domain != "example.org" || u.Quota != DefaultQuota || u.QuotaSet != 0 {
		t.Errorf("GetUser = %+v", u)
	}
	if u.Created.IsZero() || time.Since(u.Created) > time.Hour {
		t.Errorf("Created = %v", u.Created)
	}
	u, err = d.GetUser(ctx, "ünïcode@example.org")
	must(t, err)
	if u.Quota != 5000 || u.QuotaSet != 5000 {
		t.Errorf("GetUser with a quota = %+v", u)
	}
	_, err = d.GetUser(ctx, "nobody@example.org")
	wantErr(t, err, accounts.ErrNotFound)

	must(t, d.SetQuota(ctx, "alice@example.org", 42))
	if u, _ = d.GetUser(ctx, "alice@example.org"); u.Quota != 42 || u.QuotaSet != 42 {
		t.Errorf("after SetQuota 42: %+v", u)
	}
	must(t, d.SetQuota(ctx, "alice@example.org", 0))
	if u, _ = d.GetUser(ctx, "alice@example.org"); u.Quota != DefaultQuota || u.QuotaSet != 0 {
		t.Errorf("after SetQuota 0: %+v", u)
	}
	wantErr(t, d.SetQuota(ctx, "alice@example.org", -5), accounts.ErrInvalid)
	wantErr(t, d.SetQuota(ctx, "nobody@example.org", 5), accounts.ErrNotFound)

	all, err := d.ListUsers(ctx, "")
	must(t, err)
	if got := addresses(all); !slices.Equal(got, []string{"bob@example.net", "alice@example.org", "ünïcode@example.org"}) {
		t.Errorf("ListUsers all = %v, want by domain, then address", got)
	}
	some, err := d.ListUsers(ctx, "Example.NET")
	must(t, err)
	if got := addresses(some); !slices.Equal(got, []string{"bob@example.net"}) {
		t.Errorf("ListUsers example.net = %v", got)
	}
	_, err = d.ListUsers(ctx, "nowhere.org")
	wantErr(t, err, accounts.ErrNotFound)

	must(t, d.RemoveUser(ctx, "BOB@example.net"))
	wantErr(t, d.RemoveUser(ctx, "bob@example.net"), accounts.ErrNotFound)
	if _, err := d.Authenticate(ctx, "bob@example.net", "pw"); !errors.Is(err, accounts.ErrAuthFailed) {
		t.Errorf("a removed user authenticates: %v", err)
	}
}

func testAuthenticate(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "alice@example.org", "correct horse", 7000))

	u, err := d.Authenticate(ctx, "Alice@Example.org", "correct horse")
	must(t, err)
	if u.Address != "alice@example.org" || u.Domain != "example.org" || u.Quota != 7000 {
		t.Errorf("Authenticate = %+v", u)
	}
	// Wrong password, unknown user, foreign domain and junk are alike.
	for _, c := range []struct{ addr, pw string }{
		{"alice@example.org", "wrong"},
		{"alice@example.org", ""},
		{"alice@example.org", "Correct horse"},
		{"alice@example.org", strings.Repeat("x", 5000)},
		{"nobody@example.org", "correct horse"},
		{"nobody@other.org", "x"},
		{"not an address", "x"},
	} {
		_, err := d.Authenticate(ctx, c.addr, c.pw)
		if !errors.Is(err, accounts.ErrAuthFailed) {
			t.Errorf("Authenticate(%q, %.10q…) = %v, want ErrAuthFailed", c.addr, c.pw, err)
		}
	}
	must(t, d.AddUser(ctx, "bob@example.org", "pw", 0))
	if u, err := d.Authenticate(ctx, "bob@example.org", "pw"); err != nil || u.Quota != DefaultQuota {
		t.Errorf("Authenticate with the default quota = %+v, %v", u, err)
	}
	must(t, d.SetPassword(ctx, "alice@example.org", "battery staple"))
	_, err = d.Authenticate(ctx, "alice@example.org", "correct horse")
	wantErr(t, err, accounts.ErrAuthFailed)
	_, err = d.Authenticate(ctx, "alice@example.org", "battery staple")
	must(t, err)
	wantErr(t, d.SetPassword(ctx, "alice@example.org", ""), accounts.ErrInvalid)
	wantErr(t, d.SetPassword(ctx, "nobody@example.org", "x"), accounts.ErrNotFound)
}

// ImportUsers stores hashes made elsewhere as they are (both schemes log
// in), and adds all of the users or, on any bad one, none.
func testImportUsers(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddUser(ctx, "taken@example.org", "pw", 0))
	must(t, d.AddAlias(ctx, "alias@example.org", "taken@example.org"))
	argon, err := passwd.Hash("argon pw")
	must(t, err)
	bc, err := bcrypt.GenerateFromPassword([]byte("bcrypt pw"), bcrypt.MinCost)
	must(t, err)
	good := []accounts.ImportedUser{{Address: "A@example.org", Hash: argon}, {Address: "b@example.org", Hash: string(bc), Quota: 4000}}
	for _, c := range []struct {
		name string
		bad  accounts.ImportedUser
		kind error
	}{
		{"existing user", accounts.ImportedUser{Address: "taken@example.org", Hash: argon}, accounts.ErrExists},
		{"alias", accounts.ImportedUser{Address: "alias@example.org", Hash: argon}, accounts.ErrExists},
		{"foreign domain", accounts.ImportedUser{Address: "c@nowhere.org", Hash: argon}, accounts.ErrNotFound},
		{"given twice", accounts.ImportedUser{Address: "a@EXAMPLE.org", Hash: argon}, accounts.ErrInvalid},
		{"bad address", accounts.ImportedUser{Address: "no at", Hash: argon}, accounts.ErrInvalid},
		{"negative quota", accounts.ImportedUser{Address: "c@example.org", Hash: argon, Quota: -1}, accounts.ErrInvalid},
		{"plain password", accounts.ImportedUser{Address: "c@example.org", Hash: "secret"}, accounts.ErrInvalid},
		{"broken argon2id", accounts.ImportedUser{Address: "c@example.org", Hash: argon[:len(argon)-30]}, accounts.ErrInvalid},
		{"huge argon2id memory", accounts.ImportedUser{Address: "c@example.org", Hash: strings.Replace(argon, "m=19456", "m=9999999", 1)}, accounts.ErrInvalid},
		{"broken bcrypt", accounts.ImportedUser{Address: "c@example.org", Hash: string(bc[:40])}, accounts.ErrInvalid},
	} {
		err := d.ImportUsers(ctx, append(slices.Clone(good), c.bad))
		if !errors.Is(err, c.kind) {
			t.Errorf("%s: ImportUsers = %v, want %v", c.name, err, c.kind)
		}
		if _, err := d.GetUser(ctx, "a@example.org"); !errors.Is(err, accounts.ErrNotFound) {
			t.Fatalf("%s: a refused import added a user (GetUser: %v)", c.name, err)
		}
	}
	must(t, d.ImportUsers(ctx, good))
	if u, err := d.Authenticate(ctx, "a@example.org", "argon pw"); err != nil || u.Quota != DefaultQuota {
		t.Errorf("imported argon2id user: %+v, %v", u, err)
	}
	if u, err := d.Authenticate(ctx, "b@example.org", "bcrypt pw"); err != nil || u.Quota != 4000 {
		t.Errorf("imported bcrypt user: %+v, %v", u, err)
	}
	_, err = d.Authenticate(ctx, "b@example.org", "argon pw")
	wantErr(t, err, accounts.ErrAuthFailed)
	wantErr(t, d.ImportUsers(ctx, good[:1]), accounts.ErrExists)
}

// aliasSetup: example.org with alice and bob, example.net with carol.
func aliasSetup(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddDomain(ctx, "example.net"))
	for _, u := range []string{"alice@example.org", "bob@example.org", "carol@example.net"} {
		must(t, d.AddUser(ctx, u, "pw", 0))
	}
}

func testAliases(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	aliasSetup(t, d)
	must(t, d.AddAlias(ctx, "Sales@Example.org", "alice@example.org"))
	wantErr(t, d.AddAlias(ctx, "sales@example.org", "ALICE@example.org"), accounts.ErrExists)
	wantErr(t, d.AddAlias(ctx, "x@nowhere.org", "alice@example.org"), accounts.ErrNotFound)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "someone%victim.example@elsewhere.example"), accounts.ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "host!someone@elsewhere.example"), accounts.ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "@relay.example:someone@elsewhere.example"), accounts.ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "someone@[192.0.2.1]"), accounts.ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "ghost@example.org"), accounts.ErrNotFound)
	wantErr(t, d.AddAlias(ctx, "alice@example.org", "bob@example.org"), accounts.ErrExists)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "x@example.org"), accounts.ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "@example.org"), accounts.ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "bad address@example.org", "alice@example.org"), accounts.ErrInvalid)
	wantErr(t, d.AddUser(ctx, "sales@example.org", "pw", 0), accounts.ErrExists)
	must(t, d.AddAlias(ctx, "@example.net", "carol@example.net"))
	must(t, d.AddAlias(ctx, "team@example.net", "sales@example.org")) // to an alias

	got, err := d.ListAliases(ctx, "")
	must(t, err)
	want := []accounts.Alias{{From: "@example.net", To: "carol@example.net"}, {From: "team@example.net", To: "sales@example.org"}, {From: "sales@example.org", To: "alice@example.org"}}
	if !slices.Equal(got, want) {
		t.Errorf("ListAliases = %v, want %v", got, want)
	}
	got, err = d.ListAliases(ctx, "Example.org")
	must(t, err)
	if !slices.Equal(got, want[2:]) {
		t.Errorf("ListAliases example.org = %v", got)
	}
	_, err = d.ListAliases(ctx, "nowhere.org")
	wantErr(t, err, accounts.ErrNotFound)
	must(t, d.RemoveAlias(ctx, "SALES@example.org", "alice@example.org"))
	wantErr(t, d.RemoveAlias(ctx, "sales@example.org", "alice@example.org"), accounts.ErrNotFound)
}

// resolve returns the mailboxes of addr, sorted.
func resolve(t *testing.T, d accounts.Directory, addr string) []string {
	t.Helper()
	users, err := d.Resolve(context.Background(), addr)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", addr, err)
	}
	got := addresses(users)
	slices.Sort(got) // the order of mailboxes is not part of the contract
	return got
}

func testResolve(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	aliasSetup(t, d)
	users, err := d.Resolve(ctx, "Alice@EXAMPLE.org")
	must(t, err)
	if len(users) != 1 || users[0].Address != "alice@example.org" || users[0].Quota != DefaultQuota {
		t.Errorf("Resolve(user) = %+v", users)
	}
	_, err = d.Resolve(ctx, "alice@elsewhere.example")
	wantErr(t, err, accounts.ErrNotLocal)
	_, err = d.Resolve(ctx, "nobody@example.org")
	wantErr(t, err, accounts.ErrNoSuchUser)
	_, err = d.Resolve(ctx, "not an address")
	wantErr(t, err, accounts.ErrInvalid)

	// Fan-out through a chain, each mailbox once.
	must(t, d.AddAlias(ctx, "team@example.org", "alice@example.org"))
	must(t, d.AddAlias(ctx, "team@example.org", "bob@example.org"))
	must(t, d.AddAlias(ctx, "all@example.org", "team@example.org"))
	must(t, d.AddAlias(ctx, "all@example.org", "alice@example.org"))
	must(t, d.AddAlias(ctx, "all@example.org", "carol@example.net"))
	if got := resolve(t, d, "all@example.org"); !slices.Equal(got, []string{"alice@example.org", "bob@example.org", "carol@example.net"}) {
		t.Errorf("fan-out: %v", got)
	}

	// The catch-all applies only when neither a user nor an alias matches.
	must(t, d.AddAlias(ctx, "@example.org", "bob@example.org"))
	if got := resolve(t, d, "random@example.org"); !slices.Equal(got, []string{"bob@example.org"}) {
		t.Errorf("catch-all: %v", got)
	}
	if got := resolve(t, d, "alice@example.org"); !slices.Equal(got, []string{"alice@example.org"}) {
		t.Errorf("user with a catch-all: %v", got)
	}
	if got := resolve(t, d, "team@example.org"); !slices.Equal(got, []string{"alice@example.org", "bob@example.org"}) {
		t.Errorf("alias with a catch-all: %v", got)
	}
	_, err = d.Resolve(ctx, "random@example.net")
	wantErr(t, err, accounts.ErrNoSuchUser)

	// A loop ends and yields what it reaches.
	must(t, d.AddAlias(ctx, "l1@example.net", "carol@example.net"))
	must(t, d.AddAlias(ctx, "l2@example.net", "l1@example.net"))
	must(t, d.AddAlias(ctx, "l1@example.net", "l2@example.net"))
	if got := resolve(t, d, "l2@example.net"); !slices.Equal(got, []string{"carol@example.net"}) {
		t.Errorf("loop: %v", got)
	}
	must(t, d.RemoveAlias(ctx, "l1@example.net", "carol@example.net"))
	_, err = d.Resolve(ctx, "l2@example.net")
	wantErr(t, err, accounts.ErrNoSuchUser)

	// Chains are followed MaxAliasDepth deep, no further.
	prev := "carol@example.net"
	for i := range MaxAliasDepth + 1 {
		next := fmt.Sprintf("c%d@example.net", i)
		must(t, d.AddAlias(ctx, next, prev))
		prev = next
	}
	_, err = d.Resolve(ctx, prev)
	wantErr(t, err, accounts.ErrNoSuchUser)
	if got := resolve(t, d, fmt.Sprintf("c%d@example.net", MaxAliasDepth-1)); !slices.Equal(got, []string{"carol@example.net"}) {
		t.Errorf("chain of %d: %v", MaxAliasDepth, got)
	}

	// An alias to a removed user leads nowhere; a changed quota is seen.
	must(t, d.AddUser(ctx, "temp@example.net", "pw", 0))
	must(t, d.AddAlias(ctx, "dangling@example.net", "temp@example.net"))
	must(t, d.SetQuota(ctx, "temp@example.net", 99))
	if users, err := d.Resolve(ctx, "dangling@example.net"); err != nil || len(users) != 1 || users[0].Quota != 99 {
		t.Errorf("Resolve after SetQuota = %+v, %v", users, err)
	}
	must(t, d.RemoveUser(ctx, "temp@example.net"))
	_, err = d.Resolve(ctx, "dangling@example.net")
	wantErr(t, err, accounts.ErrNoSuchUser)

	// Forwarding: an external target comes back as a Forward, through
	// chains too, beside the local mailboxes, each once.
	must(t, d.AddAlias(ctx, "fwd@example.net", "Someone@Elsewhere.example"))
	must(t, d.AddAlias(ctx, "both@example.net", "fwd@example.net"))
	must(t, d.AddAlias(ctx, "both@example.net", "carol@example.net"))
	must(t, d.AddAlias(ctx, "both@example.net", "someone@elsewhere.example"))
	users, err = d.Resolve(ctx, "both@example.net")
	must(t, err)
	var fwd, local []string
	for _, u := range users {
		if u.Forward {
			fwd = append(fwd, u.Address)
		} else {
			local = append(local, u.Address)
		}
	}
	if !slices.Equal(fwd, []string{"someone@elsewhere.example"}) || !slices.Equal(local, []string{"carol@example.net"}) {
		t.Errorf("forwarding: %+v", users)
	}
	wantErr(t, d.AddAlias(ctx, "fwd@example.net", "someone@elsewhere.example"), accounts.ErrExists)
	wantErr(t, d.AddAlias(ctx, "carol@example.net", "someone@elsewhere.example"), accounts.ErrExists)
	if ok, _ := d.CanSendAs(ctx, "carol@example.net", "fwd@example.net"); ok {
		t.Error("a forwarding alias lets a user send as it")
	}
}

func testCanSendAs(t *testing.T, d accounts.Directory) {
	ctx := context.Background()
	aliasSetup(t, d)
	must(t, d.AddAlias(ctx, "sales@example.org", "alice@example.org"))
	must(t, d.AddAlias(ctx, "team@example.org", "sales@example.org"))
	must(t, d.AddAlias(ctx, "team@example.org", "bob@example.org"))
	must(t, d.AddAlias(ctx, "@example.org", "alice@example.org"))
	for _, c := range []struct {
		user, from string
		want       bool
	}{
		{"alice@example.org", "ALICE@example.org", true},
		{"Alice@example.org", "alice@example.org", true},
		{"alice@example.org", "sales@example.org", true},
		{"alice@example.org", "team@example.org", true},
		{"bob@example.org", "team@example.org", true},
		{"bob@example.org", "sales@example.org", false},
		{"alice@example.org", "bob@example.org", false},
		{"alice@example.org", "anything@example.org", false}, // a catch-all grants nothing
		{"alice@example.org", "alice@elsewhere.example", false},
	} {
		got, err := d.CanSendAs(ctx, c.user, c.from)
		must(t, err)
		if got != c.want {
			t.Errorf("CanSendAs(%s, %s) = %v, want %v", c.user, c.from, got, c.want)
		}
	}
	_, err := d.CanSendAs(ctx, "alice@example.org", "bad address")
	wantErr(t, err, accounts.ErrInvalid)
}

// Concurrent calls that add the same thing: exactly one succeeds, the
// others get ErrExists (not a constraint error, not a second success).
func testConcurrent(t *testing.T, d accounts.Directory) {
	ConcurrentAdds(t, d, d)
}

// ConcurrentAdds races a and b (two handles on one backend, or the same
// one twice) adding the same domain, user and alias: each add succeeds
// exactly once and every other attempt gets ErrExists.
func ConcurrentAdds(t *testing.T, a, b accounts.Admin) {
	ctx := context.Background()
	const n = 4
	race := func(what string, add func(accounts.Admin) error) {
		t.Helper()
		errs := make(chan error, 2*n)
		var wg sync.WaitGroup
		for i := range 2 * n {
			d := a
			if i%2 == 1 {
				d = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- add(d)
			}()
		}
		wg.Wait()
		close(errs)
		ok := 0
		for err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, accounts.ErrExists):
				t.Errorf("%s: %v, want nil or ErrExists", what, err)
			}
		}
		if ok != 1 {
			t.Errorf("%s: %d of %d concurrent adds succeeded, want 1", what, ok, 2*n)
		}
	}
	race("AddDomain", func(d accounts.Admin) error { return d.AddDomain(ctx, "race.example") })
	race("AddUser", func(d accounts.Admin) error { return d.AddUser(ctx, "u@race.example", "pw", 0) })
	race("AddAlias", func(d accounts.Admin) error { return d.AddAlias(ctx, "a@race.example", "u@race.example") })
	// A user and an alias of the same address: never both.
	race("AddUser or AddAlias", func(d accounts.Admin) error {
		if d == b {
			return d.AddAlias(ctx, "x@race.example", "u@race.example")
		}
		return d.AddUser(ctx, "x@race.example", "pw", 0)
	})
}
