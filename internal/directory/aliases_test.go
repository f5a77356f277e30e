package directory

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func setupAliases(t *testing.T) *Directory {
	t.Helper()
	ctx := context.Background()
	d, _ := openTest(t)
	must(t, d.AddDomain(ctx, "example.org"))
	must(t, d.AddDomain(ctx, "example.net"))
	for _, u := range []string{"alice@example.org", "bob@example.org", "carol@example.net"} {
		must(t, d.AddUser(ctx, u, "pw", 0))
	}
	return d
}

func resolve(t *testing.T, d *Directory, addr string) []string {
	t.Helper()
	users, err := d.Resolve(context.Background(), addr)
	must(t, err)
	return addresses(users)
}

func TestAliasManagement(t *testing.T) {
	ctx := context.Background()
	d := setupAliases(t)

	must(t, d.AddAlias(ctx, "Sales@Example.org", "alice@example.org"))
	wantErr(t, d.AddAlias(ctx, "sales@example.org", "ALICE@example.org"), ErrExists)
	wantErr(t, d.AddAlias(ctx, "x@nowhere.org", "alice@example.org"), ErrNotFound)
	err := d.AddAlias(ctx, "x@example.org", "someone@gmail.com")
	wantErr(t, err, ErrInvalid)
	if !strings.Contains(err.Error(), "outbound queue") {
		t.Errorf("external target message: %q", err)
	}
	wantErr(t, d.AddAlias(ctx, "x@example.org", "ghost@example.org"), ErrNotFound)
	wantErr(t, d.AddAlias(ctx, "alice@example.org", "bob@example.org"), ErrExists)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "x@example.org"), ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "x@example.org", "@example.org"), ErrInvalid)
	wantErr(t, d.AddAlias(ctx, "bad address@example.org", "alice@example.org"), ErrInvalid)
	wantErr(t, d.AddUser(ctx, "sales@example.org", "pw", 0), ErrExists)
	must(t, d.AddAlias(ctx, "@example.net", "carol@example.net"))
	must(t, d.AddAlias(ctx, "team@example.net", "sales@example.org")) // target is an alias

	got, err := d.ListAliases(ctx, "")
	must(t, err)
	want := []Alias{{From: "@example.net", To: "carol@example.net"}, {From: "team@example.net", To: "sales@example.org"}, {From: "sales@example.org", To: "alice@example.org"}}
	if !slices.Equal(got, want) {
		t.Errorf("ListAliases = %v, want %v", got, want)
	}
	got, err = d.ListAliases(ctx, "example.org")
	must(t, err)
	if !slices.Equal(got, want[2:]) {
		t.Errorf("ListAliases example.org = %v", got)
	}
	_, err = d.ListAliases(ctx, "nowhere.org")
	wantErr(t, err, ErrNotFound)

	must(t, d.RemoveAlias(ctx, "SALES@example.org", "alice@example.org"))
	wantErr(t, d.RemoveAlias(ctx, "sales@example.org", "alice@example.org"), ErrNotFound)
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	d := setupAliases(t)

	if got := resolve(t, d, "Alice@EXAMPLE.org"); !slices.Equal(got, []string{"alice@example.org"}) {
		t.Errorf("user: %v", got)
	}
	_, err := d.Resolve(ctx, "alice@gmail.com")
	wantErr(t, err, ErrNotLocal)
	_, err = d.Resolve(ctx, "nobody@example.org")
	wantErr(t, err, ErrNoSuchUser)
	_, err = d.Resolve(ctx, "not an address")
	wantErr(t, err, ErrInvalid)

	// Fan-out, with a duplicate through a chain.
	must(t, d.AddAlias(ctx, "team@example.org", "alice@example.org"))
	must(t, d.AddAlias(ctx, "team@example.org", "bob@example.org"))
	must(t, d.AddAlias(ctx, "all@example.org", "team@example.org"))
	must(t, d.AddAlias(ctx, "all@example.org", "alice@example.org"))
	must(t, d.AddAlias(ctx, "all@example.org", "carol@example.net"))
	if got := resolve(t, d, "all@example.org"); !slices.Equal(got, []string{"alice@example.org", "bob@example.org", "carol@example.net"}) {
		t.Errorf("fan-out: %v", got)
	}

	// Catch-all applies only when neither a user nor an alias matches.
	must(t, d.AddAlias(ctx, "@example.org", "bob@example.org"))
	if got := resolve(t, d, "random@example.org"); !slices.Equal(got, []string{"bob@example.org"}) {
		t.Errorf("catch-all: %v", got)
	}
	if got := resolve(t, d, "alice@example.org"); !slices.Equal(got, []string{"alice@example.org"}) {
		t.Errorf("user with catch-all: %v", got)
	}
	if got := resolve(t, d, "team@example.org"); !slices.Equal(got, []string{"alice@example.org", "bob@example.org"}) {
		t.Errorf("alias with catch-all: %v", got)
	}
	_, err = d.Resolve(ctx, "random@example.net")
	wantErr(t, err, ErrNoSuchUser)

	// A loop resolves to what it reaches and terminates.
	must(t, d.AddAlias(ctx, "l1@example.net", "carol@example.net"))
	must(t, d.AddAlias(ctx, "l2@example.net", "l1@example.net"))
	must(t, d.AddAlias(ctx, "l1@example.net", "l2@example.net"))
	if got := resolve(t, d, "l2@example.net"); !slices.Equal(got, []string{"carol@example.net"}) {
		t.Errorf("loop: %v", got)
	}
	must(t, d.RemoveAlias(ctx, "l1@example.net", "carol@example.net"))
	_, err = d.Resolve(ctx, "l2@example.net")
	wantErr(t, err, ErrNoSuchUser)

	// Chains stop after maxAliasDepth aliases.
	prev := "carol@example.net"
	for i := range maxAliasDepth + 1 {
		next := "c" + string(rune('a'+i)) + "@example.net"
		must(t, d.AddAlias(ctx, next, prev))
		prev = next
	}
	_, err = d.Resolve(ctx, prev) // maxAliasDepth+1 aliases deep
	wantErr(t, err, ErrNoSuchUser)
	if got := resolve(t, d, "c"+string(rune('a'+maxAliasDepth-1))+"@example.net"); !slices.Equal(got, []string{"carol@example.net"}) {
		t.Errorf("chain of %d: %v", maxAliasDepth, got)
	}

	// An alias to a removed user leads nowhere.
	must(t, d.AddUser(ctx, "temp@example.net", "pw", 0))
	must(t, d.AddAlias(ctx, "dangling@example.net", "temp@example.net"))
	must(t, d.RemoveUser(ctx, "temp@example.net"))
	_, err = d.Resolve(ctx, "dangling@example.net")
	wantErr(t, err, ErrNoSuchUser)
}

func TestCanSendAs(t *testing.T) {
	ctx := context.Background()
	d := setupAliases(t)
	must(t, d.AddAlias(ctx, "sales@example.org", "alice@example.org"))
	must(t, d.AddAlias(ctx, "team@example.org", "sales@example.org"))
	must(t, d.AddAlias(ctx, "team@example.org", "bob@example.org"))
	must(t, d.AddAlias(ctx, "@example.org", "alice@example.org"))

	for _, c := range []struct {
		user, from string
		want       bool
	}{
		{"alice@example.org", "ALICE@example.org", true},
		{"alice@example.org", "sales@example.org", true},
		{"alice@example.org", "team@example.org", true},
		{"bob@example.org", "team@example.org", true},
		{"bob@example.org", "sales@example.org", false},
		{"alice@example.org", "bob@example.org", false},
		{"alice@example.org", "anything@example.org", false}, // catch-all grants nothing
		{"alice@example.org", "alice@gmail.com", false},
	} {
		got, err := d.CanSendAs(ctx, c.user, c.from)
		must(t, err)
		if got != c.want {
			t.Errorf("CanSendAs(%s, %s) = %v, want %v", c.user, c.from, got, c.want)
		}
	}
	_, err := d.CanSendAs(ctx, "alice@example.org", "bad address")
	wantErr(t, err, ErrInvalid)
}

// TestTwoHandles is the CLI and the server: changes through one handle are
// seen by the other at once, and concurrent writers queue rather than fail.
func TestTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agua.db")
	server, err := Open(path, Options{DefaultQuota: testQuota})
	must(t, err)
	defer server.Close()
	cli, err := Open(path, Options{DefaultQuota: testQuota})
	must(t, err)
	defer cli.Close()

	must(t, cli.AddDomain(ctx, "example.org"))
	if ok, err := server.IsLocalDomain(ctx, "example.org"); err != nil || !ok {
		t.Fatalf("server does not see the new domain: %v %v", ok, err)
	}
	must(t, cli.AddUser(ctx, "alice@example.org", "pw1", 0))
	if _, err := server.Authenticate(ctx, "alice@example.org", "pw1"); err != nil {
		t.Fatal(err)
	}
	must(t, cli.SetPassword(ctx, "alice@example.org", "pw2"))
	_, err = server.Authenticate(ctx, "alice@example.org", "pw1")
	wantErr(t, err, ErrAuthFailed)
	must(t, cli.SetQuota(ctx, "alice@example.org", 7))
	u, err := server.GetUser(ctx, "alice@example.org")
	must(t, err)
	if u.Quota != 7 {
		t.Errorf("server sees quota %d", u.Quota)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for _, d := range []*Directory{server, cli} {
			wg.Go(func() {
				a := string(rune('a'+i)) + "@example.org"
				if d == cli {
					a = "x" + a
				}
				errs <- d.AddAlias(ctx, a, "alice@example.org")
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	aliases, err := server.ListAliases(ctx, "example.org")
	must(t, err)
	if len(aliases) != 40 {
		t.Errorf("got %d aliases, want 40", len(aliases))
	}
	must(t, cli.RemoveUser(ctx, "alice@example.org"))
	_, err = server.Resolve(ctx, "alice@example.org")
	wantErr(t, err, ErrNoSuchUser)
}

// TestConcurrentOpen is the server and the CLI starting at the same moment
// on a database that does not exist yet.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agua.db")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			d, err := Open(path, Options{DefaultQuota: testQuota})
			if err == nil {
				_, err = d.ListDomains(context.Background())
				d.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
}
