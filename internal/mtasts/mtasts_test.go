package mtasts_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mtasts"
	"github.com/agua-mail/agua/internal/mtasts/mtaststest"
)

const policyA = "version: STSv1\r\nmode: enforce\r\nmx: mx1.dest.test\r\nmx: *.backup.dest.test\r\nmax_age: 86400\r\n"

func TestParse(t *testing.T) {
	p, err := mtasts.Parse([]byte(policyA))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != mtasts.Enforce || p.MaxAge != 24*time.Hour || len(p.MX) != 2 {
		t.Fatalf("%+v", p)
	}
	// LF endings and unknown keys are fine; max_age is capped at a year.
	p, err = mtasts.Parse([]byte("version: STSv1\nmode: testing\nmx: MX.Dest.Test.\nmax_age: 9999999999\nextension: x\n"))
	if err != nil || p.Mode != mtasts.Testing || p.MX[0] != "mx.dest.test" || p.MaxAge != mtasts.MaxMaxAge {
		t.Fatalf("%+v %v", p, err)
	}
	if p, err := mtasts.Parse([]byte("version: STSv1\nmode: none\nmax_age: 0\n")); err != nil || p.Mode != mtasts.None {
		t.Fatalf("mode none: %+v %v", p, err)
	}
	for name, bad := range map[string]string{
		"no version":   "mode: enforce\nmx: a\nmax_age: 1\n",
		"version 2":    "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
		"bad mode":     "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
		"no max_age":   "version: STSv1\nmode: enforce\nmx: a\n",
		"max_age sign": "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",
		"max_age long": "version: STSv1\nmode: enforce\nmx: a\nmax_age: 12345678901\n",
		"no mx":        "version: STSv1\nmode: enforce\nmax_age: 1\n",
		"no colon":     "version: STSv1\nmode enforce\nmx: a\nmax_age: 1\n",
		"html":         "<html><body>not found</body></html>",
		"binary junk":  "\x00\x01\x02",
		"empty":        "",
	} {
		if _, err := mtasts.Parse([]byte(bad)); !errors.Is(err, mtasts.ErrSyntax) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestMatch(t *testing.T) {
	p, _ := mtasts.Parse([]byte(policyA))
	for host, want := range map[string]bool{
		"mx1.dest.test":           true,
		"MX1.DEST.TEST.":          true,
		"a.backup.dest.test":      true,
		"backup.dest.test":        false, // the wildcard needs a label
		"a.b.backup.dest.test":    false, // exactly one label (RFC 8461 4.1)
		"mx2.dest.test":           false,
		"mx1.dest.test.evil.test": false,
		"xmx1.dest.test":          false,
	} {
		if got := p.Match(host); got != want {
			t.Errorf("Match(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseTXT(t *testing.T) {
	if id, err := mtasts.ParseTXT("v=STSv1; id=20260101T000000;"); err != nil || id != "20260101T000000" {
		t.Fatalf("%q %v", id, err)
	}
	for _, bad := range []string{"v=STSv2; id=1", "id=1; v=STSv1", "v=STSv1;", "v=STSv1; id=a-b", "v=STSv1; id=" + strings.Repeat("a", 33)} {
		if _, err := mtasts.ParseTXT(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// txt is a fake TXT lookup (the unit tests of the cache; the engine's
// tests use a DNS server).
type txt struct {
	mu   sync.Mutex
	recs map[string][]string
	fail bool
}

func (x *txt) set(name string, recs ...string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.recs[name] = recs
}

func (x *txt) lookup(_ context.Context, name string) ([]string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.fail {
		return nil, errors.New("SERVFAIL")
	}
	return x.recs[name], nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestCache: a policy is fetched once over verified HTTPS and kept; a new
// TXT id fetches it again; a restart keeps it (the data folder); when the
// TXT lookup or fetch fails the cached policy still applies; after
// max_age it is gone.
func TestCache(t *testing.T) {
	srv := mtaststest.Start(t, "127.0.0.91", "dest.test", "other.test")
	srv.Set("dest.test", policyA)
	x := &txt{recs: map[string][]string{}}
	x.set("_mta-sts.dest.test", "v=spf1 -all", "v=STSv1; id=one")
	clk := &clock{t: time.Now()}
	dir := t.TempDir()
	open := func() *mtasts.Cache {
		c, err := mtasts.New(mtasts.Options{TXT: x.lookup, Dial: srv.Dial, RootCAs: srv.RootCAs, Dir: dir, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	ctx := context.Background()
	for range 3 {
		p, ok := c.Policy(ctx, "Dest.Test")
		if !ok || p.Mode != mtasts.Enforce || !p.Match("mx1.dest.test") {
			t.Fatalf("%+v %v", p, ok)
		}
	}
	if n := srv.Fetches("dest.test"); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	// A domain without the TXT record has no policy, and is not fetched.
	if _, ok := c.Policy(ctx, "other.test"); ok || srv.Fetches("other.test") != 0 {
		t.Fatal("policy without a TXT record")
	}

	// A new id: fetched again.
	srv.Set("dest.test", strings.Replace(policyA, "enforce", "testing", 1))
	x.set("_mta-sts.dest.test", "v=STSv1; id=two")
	if p, _ := c.Policy(ctx, "dest.test"); p.Mode != mtasts.Testing || srv.Fetches("dest.test") != 2 {
		t.Fatalf("after the id changed: %+v, %d fetches", p, srv.Fetches("dest.test"))
	}

	// A restart: the persisted policy applies even while DNS fails.
	x.mu.Lock()
	x.fail = true
	x.mu.Unlock()
	c = open()
	if p, ok := c.Policy(ctx, "dest.test"); !ok || p.Mode != mtasts.Testing {
		t.Fatalf("after a restart with DNS down: %+v %v", p, ok)
	}
	x.mu.Lock()
	x.fail = false
	x.mu.Unlock()

	// A new id whose fetch fails: the cached policy stays (RFC 8461 5.1).
	x.set("_mta-sts.dest.test", "v=STSv1; id=three")
	srv.Status("dest.test", http.StatusInternalServerError)
	if p, ok := c.Policy(ctx, "dest.test"); !ok || p.Mode != mtasts.Testing {
		t.Fatalf("fetch failure lost the cached policy: %+v %v", p, ok)
	}
	// Past max_age it has expired, and the fetch still fails: no policy.
	clk.add(25 * time.Hour)
	if _, ok := c.Policy(ctx, "dest.test"); ok {
		t.Fatal("expired policy used")
	}
}

// TestFetchRefusals: no policy from a server whose certificate does not
// verify, a redirect (RFC 8461 3.3), a wrong content type or a policy that
// does not parse.
func TestFetchRefusals(t *testing.T) {
	srv := mtaststest.Start(t, "127.0.0.92", "dest.test")
	other := mtaststest.Start(t, "127.0.0.93", "dest.test") // another CA
	ctx := context.Background()
	newCache := func(s *mtaststest.Server) *mtasts.Cache {
		x := &txt{recs: map[string][]string{"_mta-sts.dest.test": {"v=STSv1; id=1"}}}
		c, err := mtasts.New(mtasts.Options{TXT: x.lookup, Dial: s.Dial, RootCAs: other.RootCAs})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	srv.Set("dest.test", policyA)
	if _, ok := newCache(srv).Policy(ctx, "dest.test"); ok {
		t.Fatal("policy from a server whose certificate the pool does not trust")
	}
	other.Set("dest.test", policyA)
	if _, ok := newCache(other).Policy(ctx, "dest.test"); !ok {
		t.Fatal("no policy from the trusted server")
	}
	other.Status("dest.test", http.StatusFound)
	if _, ok := newCache(other).Policy(ctx, "dest.test"); ok {
		t.Fatal("redirect followed")
	}
	other.Status("dest.test", 0)
	other.Set("dest.test", "version: STSv1\nmode: enforce\n")
	if _, ok := newCache(other).Policy(ctx, "dest.test"); ok {
		t.Fatal("a malformed policy applied")
	}
}

// TestCacheBounded: the cache holds at most MaxEntries domains.
func TestCacheBounded(t *testing.T) {
	names := []string{"a.test", "b.test", "c.test", "d.test"}
	srv := mtaststest.Start(t, "127.0.0.94", names...)
	x := &txt{recs: map[string][]string{}}
	for _, n := range names {
		srv.Set(n, policyA)
		x.set("_mta-sts."+n, "v=STSv1; id=1")
	}
	c, err := mtasts.New(mtasts.Options{TXT: x.lookup, Dial: srv.Dial, RootCAs: srv.RootCAs, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, ok := c.Policy(context.Background(), n); !ok {
			t.Fatalf("%s: no policy", n)
		}
	}
	if c.Len() != 2 {
		t.Fatalf("%d entries, want 2", c.Len())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(policyA))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := mtasts.Parse(b)
		if err == nil && p.Mode != mtasts.None && len(p.MX) == 0 {
			t.Fatal("policy without mx accepted")
		}
	})
}
