package resolver

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/miekg/dns"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTest(t *testing.T, cfg Config) (*Resolver, *dnstest.Server, *clock) {
	t.Helper()
	srv := dnstest.Start(t, "127.0.0.53")
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if cfg.Servers == nil {
		cfg.Servers = []string{srv.Addr}
	}
	cfg.Now = clk.Now
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, srv, clk
}

func TestLookups(t *testing.T) {
	r, srv, _ := newTest(t, Config{})
	srv.Add(t,
		"example.test. 300 IN MX 20 backup.example.test.",
		"example.test. 300 IN MX 10 mx.example.test.",
		"mx.example.test. 300 IN A 127.0.0.10",
		"mx.example.test. 300 IN AAAA ::1",
		"example.test. 300 IN TXT \"v=spf1 \" \"-all\"",
		"_25._tcp.mx.example.test. 300 IN TLSA 3 1 1 0123456789abcdef",
		"10.0.0.127.in-addr.arpa. 300 IN PTR mx.example.test.",
		"alias.example.test. 300 IN CNAME mx.example.test.",
	)
	ctx := context.Background()

	mxs, _, err := r.MX(ctx, "Example.TEST")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(mxs, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	if want := []MX{{"mx.example.test", 10}, {"backup.example.test", 20}}; !slices.Equal(mxs, want) {
		t.Errorf("MX = %v, want %v", mxs, want)
	}
	a, _, err := r.A(ctx, "mx.example.test")
	if err != nil || !slices.Equal(a, []netip.Addr{netip.MustParseAddr("127.0.0.10")}) {
		t.Errorf("A = %v, %v", a, err)
	}
	ips, _, err := r.IP(ctx, "mx.example.test")
	if err != nil || !slices.Equal(ips, []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.10")}) {
		t.Errorf("IP = %v, %v", ips, err)
	}
	ips, _, err = r.IP(ctx, "alias.example.test")
	if err != nil || len(ips) != 2 {
		t.Errorf("IP through CNAME = %v, %v", ips, err)
	}
	txt, _, err := r.TXT(ctx, "example.test")
	if err != nil || !slices.Equal(txt, []string{"v=spf1 -all"}) {
		t.Errorf("TXT = %q, %v", txt, err)
	}
	tlsa, _, err := r.TLSA(ctx, 25, "mx.example.test")
	if err != nil || len(tlsa) != 1 || tlsa[0].Usage != 3 || tlsa[0].Selector != 1 || tlsa[0].MatchingType != 1 ||
		!slices.Equal(tlsa[0].Data, []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}) {
		t.Errorf("TLSA = %+v, %v", tlsa, err)
	}
	ptr, _, err := r.PTR(ctx, netip.MustParseAddr("127.0.0.10"))
	if err != nil || !slices.Equal(ptr, []string{"mx.example.test"}) {
		t.Errorf("PTR = %v, %v", ptr, err)
	}
}

func TestNullMX(t *testing.T) {
	r, srv, _ := newTest(t, Config{})
	srv.Add(t, "nomail.test. 300 IN MX 0 .")
	mxs, _, err := r.MX(context.Background(), "nomail.test")
	if err != nil || !slices.Equal(mxs, []MX{{"", 0}}) {
		t.Errorf("null MX = %v, %v", mxs, err)
	}
}

func TestPositiveCacheHonoursTTL(t *testing.T) {
	r, srv, clk := newTest(t, Config{})
	srv.Add(t, "ttl.test. 60 IN A 127.0.0.1", "ttl.test. 120 IN A 127.0.0.2")
	ctx := context.Background()
	if _, info, err := r.A(ctx, "ttl.test"); err != nil || info.Cached {
		t.Fatalf("first lookup: cached=%v err=%v", info.Cached, err)
	}
	clk.Add(59 * time.Second)
	if _, info, err := r.A(ctx, "ttl.test"); err != nil || !info.Cached {
		t.Fatalf("within the smallest TTL: cached=%v err=%v", info.Cached, err)
	}
	if n := srv.Queries("ttl.test", dns.TypeA); n != 1 {
		t.Fatalf("queries within TTL = %d, want 1", n)
	}
	clk.Add(time.Second) // 60 s: the smallest TTL of the set has run out
	if _, info, err := r.A(ctx, "ttl.test"); err != nil || info.Cached {
		t.Fatalf("after TTL: cached=%v err=%v", info.Cached, err)
	}
	if n := srv.Queries("ttl.test", dns.TypeA); n != 2 {
		t.Fatalf("queries after TTL = %d, want 2", n)
	}
}

func TestMaxTTLCaps(t *testing.T) {
	r, srv, clk := newTest(t, Config{MaxTTL: time.Minute})
	srv.Add(t, "long.test. 86400 IN TXT \"x\"")
	ctx := context.Background()
	r.TXT(ctx, "long.test")
	clk.Add(time.Minute)
	if _, info, _ := r.TXT(ctx, "long.test"); info.Cached {
		t.Fatal("answer cached beyond MaxTTL")
	}
}

func TestZeroTTLNotCached(t *testing.T) {
	r, srv, _ := newTest(t, Config{})
	srv.Add(t, "zero.test. 0 IN A 127.0.0.1")
	ctx := context.Background()
	r.A(ctx, "zero.test")
	r.A(ctx, "zero.test")
	if n := srv.Queries("zero.test", dns.TypeA); n != 2 {
		t.Fatalf("queries = %d, want 2 (TTL 0 must not be cached)", n)
	}
}

func TestNegativeCaching(t *testing.T) {
	r, srv, clk := newTest(t, Config{})
	srv.SetNegativeTTL(30)
	srv.Add(t, "exists.test. 300 IN A 127.0.0.1")
	ctx := context.Background()

	// NXDOMAIN: ErrNotFound, cached for the SOA's negative TTL (RFC 2308 5).
	_, _, err := r.MX(ctx, "missing.test")
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrTemporary) {
		t.Fatalf("NXDOMAIN: %v", err)
	}
	var de *Error
	if !errors.As(err, &de) || de.Rcode != dns.RcodeNameError || de.Type != "MX" {
		t.Fatalf("NXDOMAIN error details: %#v", err)
	}
	_, info, err := r.MX(ctx, "missing.test")
	if !errors.Is(err, ErrNotFound) || !info.Cached {
		t.Fatalf("NXDOMAIN again: cached=%v err=%v", info.Cached, err)
	}

	// NODATA: no error, no records, cached too.
	mxs, _, err := r.MX(ctx, "exists.test")
	if err != nil || len(mxs) != 0 {
		t.Fatalf("NODATA: %v %v", mxs, err)
	}
	if _, info, _ := r.MX(ctx, "exists.test"); !info.Cached {
		t.Fatal("NODATA not cached")
	}
	if n := srv.Queries("missing.test", dns.TypeMX) + srv.Queries("exists.test", dns.TypeMX); n != 2 {
		t.Fatalf("queries = %d, want 2", n)
	}
	clk.Add(30 * time.Second)
	r.MX(ctx, "missing.test")
	r.MX(ctx, "exists.test")
	if n := srv.Queries("missing.test", dns.TypeMX) + srv.Queries("exists.test", dns.TypeMX); n != 4 {
		t.Fatalf("queries after the negative TTL = %d, want 4", n)
	}
}

func TestServfailIsTemporaryAndNotCached(t *testing.T) {
	r, srv, _ := newTest(t, Config{Attempts: 1})
	srv.Rcode("broken.test", dns.TypeMX, dns.RcodeServerFailure)
	ctx := context.Background()
	for range 2 {
		_, _, err := r.MX(ctx, "broken.test")
		if !errors.Is(err, ErrTemporary) || errors.Is(err, ErrNotFound) {
			t.Fatalf("SERVFAIL: %v", err)
		}
	}
	if n := srv.Queries("broken.test", dns.TypeMX); n != 2 {
		t.Fatalf("queries = %d, want 2 (a failure must not be cached)", n)
	}
}

func TestFailoverToNextServer(t *testing.T) {
	bad := dnstest.Start(t, "127.0.0.54")
	bad.Rcode("fo.test", dns.TypeA, dns.RcodeRefused)
	good := dnstest.Start(t, "127.0.0.55")
	good.Add(t, "fo.test. 300 IN A 127.0.0.9")
	r, err := New(Config{Servers: []string{bad.Addr, good.Addr}, Attempts: 1, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ips, _, err := r.A(context.Background(), "fo.test")
	if err != nil || len(ips) != 1 {
		t.Fatalf("A = %v, %v", ips, err)
	}
	if bad.Queries("fo.test", dns.TypeA) != 1 || good.Queries("fo.test", dns.TypeA) != 1 {
		t.Fatal("both servers should have been asked once")
	}
}

func TestTimeoutIsTemporary(t *testing.T) {
	r, srv, _ := newTest(t, Config{Timeout: 200 * time.Millisecond, Attempts: 2})
	srv.Silent("slow.test", dns.TypeMX, true)
	_, _, err := r.MX(context.Background(), "slow.test")
	if !errors.Is(err, ErrTemporary) {
		t.Fatalf("timeout: %v", err)
	}
	if n := srv.Queries("slow.test", dns.TypeMX); n != 2 {
		t.Fatalf("attempts = %d, want 2", n)
	}
	// A cancelled context ends the lookup as temporary too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := r.MX(ctx, "slow.test"); !errors.Is(err, ErrTemporary) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestADBitExposed(t *testing.T) {
	r, srv, _ := newTest(t, Config{})
	srv.Add(t, "signed.test. 300 IN MX 10 mx.signed.test.", "plain.test. 300 IN MX 10 mx.plain.test.")
	ctx := context.Background()
	if _, info, _ := r.MX(ctx, "plain.test"); info.Authentic {
		t.Fatal("AD reported without the bit")
	}
	srv.SetAD(true)
	_, info, err := r.MX(ctx, "signed.test")
	if err != nil || !info.Authentic {
		t.Fatalf("AD not reported: %v %v", info, err)
	}
	if _, info, _ := r.MX(ctx, "signed.test"); !info.Cached || !info.Authentic {
		t.Fatalf("cached answer lost AD: %+v", info)
	}
}

func TestTruncatedRetriesOverTCP(t *testing.T) {
	r, srv, _ := newTest(t, Config{})
	srv.Add(t, "big.test. 300 IN TXT \"long\"")
	srv.Truncate("big.test", dns.TypeTXT)
	txt, _, err := r.TXT(context.Background(), "big.test")
	if err != nil || !slices.Equal(txt, []string{"long"}) {
		t.Fatalf("TXT = %v, %v", txt, err)
	}
	if srv.TCPQueries("big.test", dns.TypeTXT) != 1 {
		t.Fatal("no TCP retry")
	}
}

func TestCacheBounded(t *testing.T) {
	r, srv, _ := newTest(t, Config{CacheSize: 2})
	srv.Add(t, "a.test. 300 IN A 127.0.0.1", "b.test. 300 IN A 127.0.0.1", "c.test. 300 IN A 127.0.0.1")
	ctx := context.Background()
	for _, n := range []string{"a.test", "b.test", "c.test"} {
		r.A(ctx, n)
	}
	if n := r.cache.len(); n != 2 {
		t.Fatalf("cache holds %d, want 2", n)
	}
	if _, info, _ := r.A(ctx, "a.test"); info.Cached {
		t.Fatal("least recently used entry was kept")
	}
	if _, info, _ := r.A(ctx, "c.test"); !info.Cached {
		t.Fatal("most recent entry was evicted")
	}
}

func TestBadName(t *testing.T) {
	r, _, _ := newTest(t, Config{})
	for _, n := range []string{"", "a..b", "x\x00y"} {
		if _, _, err := r.MX(context.Background(), n); !errors.Is(err, ErrPermanent) {
			t.Errorf("MX(%q) = %v, want ErrPermanent", n, err)
		}
	}
}

func TestResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte("# test\nnameserver 127.0.0.53\nnameserver ::1\n"), 0o644)
	r, err := New(Config{ResolvConf: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Servers(); !slices.Equal(got, []string{"127.0.0.53:53", "[::1]:53"}) {
		t.Fatalf("servers = %v", got)
	}
	os.WriteFile(path, []byte("# nothing\n"), 0o644)
	if _, err := New(Config{ResolvConf: path}); err == nil {
		t.Fatal("no error for a resolv.conf without nameservers")
	}
	r, err = New(Config{Servers: []string{"127.0.0.53", "[::1]:5353"}})
	if err != nil || !slices.Equal(r.Servers(), []string{"127.0.0.53:53", "[::1]:5353"}) {
		t.Fatalf("configured servers = %v, %v", r.Servers(), err)
	}
}
