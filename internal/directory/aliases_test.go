package directory

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/accounts/accountstest"
)

// TestAliasDepth: the suite's chain depth is this backend's limit.
func TestAliasDepth(t *testing.T) {
	if accounts.MaxAliasDepth != accountstest.MaxAliasDepth {
		t.Errorf("accounts.MaxAliasDepth = %d, the accounts contract says %d", accounts.MaxAliasDepth, accountstest.MaxAliasDepth)
	}
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
