package dnsbl

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/resolver"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// The score adds the weights of the listing lists, a result is cached
// until cache_ttl, and the table stays within cache_size.
func TestCheckerScoreCacheBound(t *testing.T) {
	d := dnstest.Start(t, "127.0.0.1")
	d.Add(t, "2.0.0.192.bl.test. 300 IN A 127.0.0.2", "2.0.0.192.bl2.test. 300 IN A 127.0.0.9")
	res, err := resolver.New(resolver.Config{Servers: []string{d.Addr}, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var sites []Site
	for _, l := range []string{"bl.test=127.0.0.[2..11]*2", "bl2.test*2"} {
		s, err := ParseSite(l)
		if err != nil {
			t.Fatal(err)
		}
		sites = append(sites, s)
	}
	c := New(Config{Sites: sites, Threshold: 3, AllowThreshold: -1, CacheTTL: time.Minute, CacheSize: 4, Now: clock}, res.A)
	a := netip.MustParseAddr("192.0.0.2")
	if r := c.Peek(a); r.Done {
		t.Fatalf("Peek before any lookup: %+v", r)
	}
	r := c.Check(context.Background(), a)
	if !r.Done || r.Score != 4 || !r.Listed || r.Reason() != "dnsbl:bl.test" {
		t.Fatalf("result %+v", r)
	}
	c.Check(context.Background(), a)
	if n := d.Queries("2.0.0.192.bl.test.", 1); n != 1 {
		t.Errorf("asked %d times, want 1 (cached)", n)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if c.Peek(a).Done {
		t.Error("expired result still given")
	}
	for i := range 10 {
		c.Check(context.Background(), netip.AddrFrom4([4]byte{192, 0, 1, byte(i)}))
	}
	c.mu.Lock()
	n := len(c.entries)
	c.mu.Unlock()
	if n > 4 {
		t.Errorf("%d entries kept, cache_size 4", n)
	}
}
