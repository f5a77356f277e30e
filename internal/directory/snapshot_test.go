package directory

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// openPair opens the database twice: d as the server does (with opts) and
// cli as the CLI does, another handle that knows nothing of d.
func openPair(t *testing.T, opts Options) (d, cli *Directory) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agua.db")
	opts.DefaultQuota = testQuota
	d, err := Open(path, opts)
	must(t, err)
	t.Cleanup(func() { d.Close() })
	cli, err = Open(path, Options{DefaultQuota: testQuota})
	must(t, err)
	t.Cleanup(func() { cli.Close() })
	return d, cli
}

func resolveOne(t *testing.T, d *Directory, addr string) string {
	t.Helper()
	users, err := d.Resolve(context.Background(), addr)
	must(t, err)
	if len(users) != 1 {
		t.Fatalf("Resolve(%s) = %v", addr, users)
	}
	return users[0].Address
}

// Changes made through another handle (the CLI in another process) apply to
// the very next lookup, and a lookup without a change reads no table.
func TestSnapshotFollowsOtherHandles(t *testing.T) {
	ctx := context.Background()
	d, cli := openPair(t, Options{SnapshotMaxEntries: 100})
	must(t, cli.AddDomain(ctx, "example.org"))
	_, err := d.Resolve(ctx, "carol@example.org")
	wantErr(t, err, ErrNoSuchUser)
	_, err = d.Resolve(ctx, "carol@example.net")
	wantErr(t, err, ErrNotLocal)

	must(t, cli.AddUser(ctx, "carol@example.org", "pw", 0))
	if got := resolveOne(t, d, "Carol@Example.org"); got != "carol@example.org" {
		t.Fatalf("Resolve = %s", got)
	}
	built, asked := d.snaps.reloads.Load(), d.snaps.versions.Load()
	for range 10 {
		resolveOne(t, d, "carol@example.org")
		_, err := d.Resolve(ctx, "nobody@example.org")
		wantErr(t, err, ErrNoSuchUser)
	}
	if n := d.snaps.reloads.Load(); n != built {
		t.Fatalf("the snapshot was rebuilt %d times without a change", n-built)
	}
	// Without a commit the WAL-index header answers: no statement at all.
	if d.snaps.wal == nil {
		t.Fatal("the WAL index is not mapped")
	}
	if n := d.snaps.versions.Load(); n != asked {
		t.Fatalf("%d data_version statements without a change", n-asked)
	}

	must(t, cli.AddAlias(ctx, "@example.org", "carol@example.org"))
	if got := resolveOne(t, d, "anyone@example.org"); got != "carol@example.org" {
		t.Fatalf("catch-all resolves to %s", got)
	}
	must(t, cli.AddDomain(ctx, "example.net"))
	must(t, cli.AddUser(ctx, "dave@example.net", "pw", 0))
	must(t, cli.AddAlias(ctx, "sales@example.net", "dave@example.net"))
	if ok, err := d.CanSendAs(ctx, "dave@example.net", "sales@example.net"); err != nil || !ok {
		t.Fatalf("CanSendAs = %v, %v", ok, err)
	}
	must(t, cli.RemoveAlias(ctx, "sales@example.net", "dave@example.net"))
	if ok, err := d.CanSendAs(ctx, "dave@example.net", "sales@example.net"); err != nil || ok {
		t.Fatalf("CanSendAs after the alias is removed = %v, %v", ok, err)
	}
	must(t, cli.RemoveUser(ctx, "carol@example.org"))
	_, err = d.Resolve(ctx, "carol@example.org")
	wantErr(t, err, ErrNoSuchUser)
	if ok, err := d.IsLocalDomain(ctx, "example.net"); err != nil || !ok {
		t.Fatalf("IsLocalDomain = %v, %v", ok, err)
	}
	// A change made through d itself applies too.
	must(t, d.SetQuota(ctx, "dave@example.net", 4242))
	if users, err := d.Resolve(ctx, "dave@example.net"); err != nil || users[0].Quota != 4242 {
		t.Fatalf("Resolve after SetQuota = %v, %v", users, err)
	}
}

// A directory larger than the bound is served from SQL, and the snapshot
// comes back when it shrinks.
func TestSnapshotTooBig(t *testing.T) {
	ctx := context.Background()
	d, cli := openPair(t, Options{SnapshotMaxEntries: 2})
	must(t, cli.AddDomain(ctx, "example.org"))
	for _, u := range []string{"a@example.org", "b@example.org", "c@example.org"} {
		must(t, cli.AddUser(ctx, u, "pw", 0))
	}
	if got := resolveOne(t, d, "c@example.org"); got != "c@example.org" {
		t.Fatalf("Resolve = %s", got)
	}
	if d.snaps.cur != nil || !d.snaps.tooBig {
		t.Fatal("a directory over the bound was loaded into memory")
	}
	must(t, cli.RemoveUser(ctx, "c@example.org"))
	_, err := d.Resolve(ctx, "c@example.org")
	wantErr(t, err, ErrNoSuchUser)
	if d.snaps.cur == nil || len(d.snaps.cur.users) != 2 {
		t.Fatal("the snapshot did not come back when the directory shrank")
	}
}

// countHashes counts the password hashes d computes.
func countHashes(d *Directory) *atomic.Int64 {
	var n atomic.Int64
	d.hasher.Observe = func() { n.Add(1) }
	return &n
}

// fakeClock is a clock that tests move by hand.
type fakeClock struct{ t atomic.Pointer[time.Time] }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	now := time.Unix(1_800_000_000, 0)
	c.t.Store(&now)
	return c
}
func (c *fakeClock) now() time.Time { return *c.t.Load() }
func (c *fakeClock) add(d time.Duration) {
	now := c.now().Add(d)
	c.t.Store(&now)
}

// The login cache: a repeat login computes no hash; failures are never
// cached; passwd and remove, through this handle or another, and the TTL
// end it.
func TestAuthCache(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"Snapshot", Options{SnapshotMaxEntries: 100, AuthCacheTTL: 5 * time.Minute, AuthCacheSize: 10}},
		{"SQL", Options{AuthCacheTTL: 5 * time.Minute, AuthCacheSize: 10}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			d, cli := openPair(t, c.opts)
			clock := newFakeClock()
			d.cache.Now = clock.now
			hashes := countHashes(d)
			login := func(addr, pw string, wantOK bool, wantHashes int64) {
				t.Helper()
				before := hashes.Load()
				_, err := d.Authenticate(ctx, addr, pw)
				if ok := err == nil; ok != wantOK {
					t.Fatalf("Authenticate(%s, %s) = %v, want ok=%v", addr, pw, err, wantOK)
				}
				if !wantOK {
					wantErr(t, err, ErrAuthFailed)
				}
				if n := hashes.Load() - before; n != wantHashes {
					t.Fatalf("Authenticate(%s, %s) computed %d hashes, want %d", addr, pw, n, wantHashes)
				}
			}
			must(t, cli.AddDomain(ctx, "example.org"))
			must(t, cli.AddUser(ctx, "alice@example.org", "old secret", 0))
			must(t, cli.AddUser(ctx, "bob@example.org", "bob secret", 0))

			login("alice@example.org", "old secret", true, 1)
			login("Alice@example.org", "old secret", true, 0) // cached
			login("alice@example.org", "wrong", false, 1)
			login("alice@example.org", "wrong", false, 1) // failures are not cached
			login("nobody@example.org", "old secret", false, 1)
			login("alice@example.org", "old secret", true, 0)

			// passwd from another process.
			must(t, cli.SetPassword(ctx, "alice@example.org", "new secret"))
			login("alice@example.org", "old secret", false, 1)
			login("alice@example.org", "new secret", true, 1)
			login("alice@example.org", "new secret", true, 0)
			// passwd through this handle.
			must(t, d.SetPassword(ctx, "alice@example.org", "third secret"))
			login("alice@example.org", "new secret", false, 1)
			login("alice@example.org", "third secret", true, 1)

			// TTL.
			clock.add(5*time.Minute - time.Second)
			login("alice@example.org", "third secret", true, 0)
			clock.add(time.Second)
			login("alice@example.org", "third secret", true, 1)
			login("alice@example.org", "third secret", true, 0)

			// remove, from another process and from this one.
			login("bob@example.org", "bob secret", true, 1)
			login("bob@example.org", "bob secret", true, 0)
			must(t, cli.RemoveUser(ctx, "alice@example.org"))
			login("alice@example.org", "third secret", false, 1)
			must(t, d.RemoveUser(ctx, "bob@example.org"))
			login("bob@example.org", "bob secret", false, 1)
			// Re-added with the same password: verified afresh.
			must(t, cli.AddUser(ctx, "bob@example.org", "bob secret", 0))
			login("bob@example.org", "bob secret", true, 1)
		})
	}
}

// Lookups running all the while never miss a change that was committed
// before they started (run with -race too).
func TestSnapshotConcurrentChanges(t *testing.T) {
	ctx := context.Background()
	d, cli := openPair(t, Options{SnapshotMaxEntries: 1000, AuthCacheTTL: time.Minute, AuthCacheSize: 10})
	must(t, cli.AddDomain(ctx, "example.org"))
	stop := make(chan struct{})
	done := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if _, err := d.Resolve(ctx, "someone@example.org"); err != nil && !isKind(err, ErrNoSuchUser) {
					done <- err
					return
				}
			}
		}()
	}
	for i := range 20 {
		addr := fmt.Sprintf("user%d@example.org", i)
		if i%2 == 0 {
			must(t, cli.AddUser(ctx, addr, "pw", 0))
		} else {
			must(t, d.AddUser(ctx, addr, "pw", 0))
		}
		if got := resolveOne(t, d, addr); got != addr {
			t.Fatalf("Resolve(%s) = %s", addr, got)
		}
	}
	close(stop)
	for range 4 {
		must(t, <-done)
	}
}
