package redisstore_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agua-mail/agua/shield/redisstore"
	"github.com/agua-mail/agua/shield/redisstore/redistest"
)

// kgFixture is a store on its own key prefix of a real redis-server, a
// plain client on the same server, and the store's clock.
type kgFixture struct {
	st     *redisstore.Store
	rdb    *redis.Client
	prefix string
	now    atomic.Int64 // ms
}

var kgPrefixes atomic.Int64

func newKGFixture(t testing.TB, srv *redistest.Server, capacity int) *kgFixture {
	t.Helper()
	f := &kgFixture{prefix: fmt.Sprintf("kg%d:", kgPrefixes.Add(1))}
	f.now.Store(time.Now().UnixMilli())
	f.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { f.rdb.Close() })
	f.st = f.open(t, srv, capacity)
	return f
}

// open opens another handle (another node) on the fixture's prefix.
func (f *kgFixture) open(t testing.TB, srv *redistest.Server, capacity int) *redisstore.Store {
	t.Helper()
	st, err := redisstore.Open(redisstore.Options{URL: srv.URL(0), Prefix: f.prefix, Capacity: capacity,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return time.UnixMilli(f.now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func (f *kgFixture) mark(t testing.TB, until time.Duration, addrs ...netip.Addr) {
	t.Helper()
	for _, a := range addrs {
		if err := f.st.MarkKnownGood(context.Background(), a, time.UnixMilli(f.now.Load()).Add(until)); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *kgFixture) revoke(t testing.TB, p string) {
	t.Helper()
	if err := f.st.RevokeKnownGood(context.Background(), netip.MustParsePrefix(p)); err != nil {
		t.Fatal(err)
	}
}

// indexed returns the addresses kgs holds, after checking that kgx holds
// exactly the same ones (its members end in "|" and the address) and that
// each has its key.
func (f *kgFixture) indexed(t testing.TB) []string {
	t.Helper()
	ctx := context.Background()
	kgs, err := f.rdb.ZRange(ctx, f.prefix+"kgs", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	kgx, err := f.rdb.ZRange(ctx, f.prefix+"kgx", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var inX []string
	for _, m := range kgx {
		_, a, ok := strings.Cut(m, "|")
		if !ok {
			t.Fatalf("kgx member %q has no address", m)
		}
		inX = append(inX, a)
	}
	slices.Sort(kgs)
	slices.Sort(inX)
	if !slices.Equal(kgs, inX) {
		t.Fatalf("kgs and kgx disagree:\nkgs %d %v\nkgx %d %v", len(kgs), kgs, len(inX), inX)
	}
	for _, a := range kgs {
		if n, _ := f.rdb.Exists(ctx, f.prefix+"kg:"+a).Result(); n != 1 {
			t.Fatalf("kgs holds %s without its key", a)
		}
	}
	return kgs
}

// want checks that exactly the addresses of keep are known-good, in
// Redis's indexes and by KnownGood.
func (f *kgFixture) want(t testing.TB, all []netip.Addr, keep func(netip.Addr) bool) {
	t.Helper()
	var exp []string
	for _, a := range all {
		_, ok, err := f.st.KnownGood(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		if ok != keep(a) {
			t.Errorf("%s: known-good %v, want %v", a, ok, keep(a))
		}
		if keep(a) {
			exp = append(exp, a.Unmap().String())
		}
	}
	slices.Sort(exp)
	exp = slices.Compact(exp)
	if got := f.indexed(t); !slices.Equal(got, exp) {
		t.Errorf("indexed %d addresses, want %d:\n%v\n%v", len(got), len(exp), got, exp)
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// Revoking a network revokes exactly its addresses: its first and last,
// not their neighbours just outside, IPv4 and IPv6 apart (an IPv6 network
// whose range holds ::ffff:0:0/96 revokes no IPv4 address, as before),
// IPv4-mapped spellings as their IPv4 form; single addresses too.
func TestKnownGoodRevokeNetwork(t *testing.T) {
	srv := redistest.Start(t)
	f := newKGFixture(t, srv, 1000)
	all := addrs(
		"192.0.1.255", "192.0.2.0", "192.0.2.1", "192.0.2.128", "192.0.2.254", "192.0.2.255", "192.0.3.0",
		"0.0.0.0", "255.255.255.255",
		"2001:db8::ffff:ffff:ffff:ffff", "2001:db8:0:1::", "2001:db8:0:1::5", "2001:db8:0:1:ffff:ffff:ffff:ffff", "2001:db8:0:2::",
		"::", "::5", "::ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"198.51.100.6", "::ffff:198.51.100.7", "198.51.101.0", "203.0.113.9", "2001:db8::9", "fe80::1",
	)
	for i := range 300 { // many more, on both sides of the networks revoked below
		all = append(all, netip.AddrFrom4([4]byte{192, 0, byte(1 + i%3), byte(i * 7)}),
			netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, byte(i % 3), 15: byte(i)}))
	}
	f.mark(t, time.Hour, all...)
	f.want(t, all, func(netip.Addr) bool { return true })

	var gone []netip.Prefix
	revoke := func(p string) {
		t.Helper()
		f.revoke(t, p)
		gone = append(gone, netip.MustParsePrefix(p))
		f.want(t, all, func(a netip.Addr) bool {
			for _, g := range gone {
				if g.Contains(a.Unmap()) || (g.Addr().Is4In6() && g.Contains(netip.AddrFrom16(a.As16()))) {
					return false
				}
			}
			return true
		})
	}
	revoke("192.0.2.0/24")
	revoke("2001:db8:0:1::/64")
	revoke("::/64") // ::, ::5, ::ffff; no IPv4 address
	revoke("::ffff:198.51.100.0/120")
	revoke("203.0.113.9/32")
	revoke("::ffff:203.0.113.9/128") // already gone: nothing
	revoke("2001:db8::9/128")
	revoke("fe80::1/128")
	revoke("0.0.0.0/32")
	revoke("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")
	revoke("255.255.255.0/24")
	if left := f.indexed(t); len(left) == 0 {
		t.Fatal("every address revoked")
	}
}

// Members pruned as expired or popped by the cap leave kgx with kgs.
func TestKnownGoodIndexPrunedAndCapped(t *testing.T) {
	srv := redistest.Start(t)
	f := newKGFixture(t, srv, 20)
	var early, late []netip.Addr
	for i := range 15 {
		early = append(early, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
		late = append(late, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
	}
	for i := range 15 { // each a millisecond apart, so the cap pops the first ten
		f.mark(t, time.Hour+time.Duration(i)*time.Millisecond, early[i])
	}
	f.mark(t, 3*time.Hour, late...)
	// 30 marked into 20: the 10 closest to expiry (early ones) popped.
	if got := f.indexed(t); len(got) != 20 {
		t.Fatalf("capped at %d, want 20: %v", len(got), got)
	}
	f.want(t, append(early, late...), func(a netip.Addr) bool { return a.Is6() || a.As4()[3] >= 10 })
	f.now.Add((2 * time.Hour).Milliseconds())
	f.mark(t, time.Hour, netip.MustParseAddr("10.9.9.9"))
	got := f.indexed(t) // the early ones pruned as expired, from both
	if len(got) != 16 || slices.Contains(got, "10.0.0.14") || !slices.Contains(got, "10.9.9.9") {
		t.Fatalf("after pruning: %d %v", len(got), got)
	}
}

// writeOldLayout writes known-good addresses as the version without kgx
// did: the keys and kgs only.
func writeOldLayout(t testing.TB, rdb *redis.Client, prefix string, until time.Time, all []netip.Addr) {
	t.Helper()
	ctx := context.Background()
	for chunk := range slices.Chunk(all, 1000) {
		_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, a := range chunk {
				pipe.Set(ctx, prefix+"kg:"+a.String(), until.UnixMilli(), 0)
				pipe.PExpireAt(ctx, prefix+"kg:"+a.String(), until)
				pipe.ZAdd(ctx, prefix+"kgs", redis.Z{Score: float64(until.UnixMilli()), Member: a.String()})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A Redis written by the previous version (kgs and the keys, no kgx)
// works: the first known-good write builds kgx, once, however many nodes
// write at the same time, and a network revocation then finds its
// addresses.
func TestKnownGoodMigration(t *testing.T) {
	srv := redistest.Start(t)
	for _, first := range []string{"revoke", "mark"} {
		t.Run(first, func(t *testing.T) {
			f := newKGFixture(t, srv, 1000)
			var all []netip.Addr
			for i := range 200 {
				all = append(all, netip.AddrFrom4([4]byte{192, 0, byte(1 + i%3), byte(i)}),
					netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, byte(i % 3), 15: byte(i)}))
			}
			writeOldLayout(t, f.rdb, f.prefix, time.UnixMilli(f.now.Load()).Add(time.Hour), all)
			if n, _ := f.rdb.Exists(context.Background(), f.prefix+"kgx").Result(); n != 0 {
				t.Fatal("kgx exists before the first write")
			}
			// Four nodes write at once; the first script to run builds kgx.
			nodes := []*redisstore.Store{f.st, f.open(t, srv, 1000), f.open(t, srv, 1000), f.open(t, srv, 1000)}
			extra := addrs("192.0.9.1", "192.0.9.2", "192.0.9.3", "192.0.9.4")
			var wg sync.WaitGroup
			for i, st := range nodes {
				wg.Go(func() {
					var err error
					if first == "revoke" {
						err = st.RevokeKnownGood(context.Background(), netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", i)))
					} else {
						err = st.MarkKnownGood(context.Background(), extra[i], time.UnixMilli(f.now.Load()).Add(time.Hour))
					}
					if err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if first == "mark" {
				all = append(all, extra...)
			}
			f.want(t, all, func(netip.Addr) bool { return true })
			f.revoke(t, "192.0.2.0/24")
			f.revoke(t, "2001:db8:0:1::/64")
			f.want(t, all, func(a netip.Addr) bool {
				return !netip.MustParsePrefix("192.0.2.0/24").Contains(a) && !netip.MustParsePrefix("2001:db8:0:1::/64").Contains(a)
			})
		})
	}
}

// Revoking a /24 among 10,000 known-good addresses reads the members
// inside it (one ZRANGEBYLEX), not the whole index (ZRANGE), and costs a
// fixed handful of commands, not a few per address revoked.
func TestKnownGoodRevokeReadsOnlyNetwork(t *testing.T) {
	srv := redistest.Start(t)
	f := newKGFixture(t, srv, 100_000)
	var all []netip.Addr
	for i := range 10_000 {
		all = append(all, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	f.mark(t, time.Hour, all...)
	f.revoke(t, "10.200.0.0/24") // loads the script: once per Redis start
	before := commandStats(t, f.rdb)
	f.revoke(t, "10.0.7.0/24")
	d, total := delta(before, commandStats(t, f.rdb))
	t.Logf("Redis commands for a /24 revocation among %d: %d %v", len(all), total, d)
	if d["zrange"] != 0 || d["zrangebylex"] != 1 {
		t.Errorf("revocation read the index with %d ZRANGE and %d ZRANGEBYLEX, want 0 and 1", d["zrange"], d["zrangebylex"])
	}
	if total > maxOpsPerNetworkRevoke {
		t.Errorf("a /24 revocation cost %d Redis commands, want at most %d: %v", total, maxOpsPerNetworkRevoke, d)
	}
	f.want(t, all, func(a netip.Addr) bool { return !netip.MustParsePrefix("10.0.7.0/24").Contains(a) })
}

// maxOpsPerNetworkRevoke bounds a network revocation of up to 500
// addresses: EVALSHA, EXISTS, ZRANGEBYLEX, DEL, ZREM, ZREMRANGEBYLEX,
// PUBLISH (7), and 1 to spare (none is per address).
const maxOpsPerNetworkRevoke = 8

// The script spells a kgx member from the address as kgs holds it
// (Go's text form): the sort key is "4" and the 4 bytes or "6" and the 16
// bytes in hex, whatever run of zero groups "::" stands for.
func TestKnownGoodIndexMembers(t *testing.T) {
	srv := redistest.Start(t)
	f := newKGFixture(t, srv, 10_000)
	rng := rand.New(rand.NewPCG(1, 2))
	var all []netip.Addr
	for range 500 {
		var b [16]byte
		for g := range 8 { // each group zero, small, or any
			switch rng.IntN(3) {
			case 1:
				b[2*g+1] = byte(rng.IntN(256))
			case 2:
				b[2*g], b[2*g+1] = byte(rng.IntN(256)), byte(rng.IntN(256))
			}
		}
		all = append(all, netip.AddrFrom16(b).Unmap(), netip.AddrFrom4([4]byte(b[:4])))
	}
	f.mark(t, time.Hour, all...)
	kgx, err := f.rdb.ZRange(context.Background(), f.prefix+"kgx", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]bool)
	for _, m := range kgx {
		got[m] = true
	}
	for _, a := range all {
		sort := "4" + hex.EncodeToString(a.AsSlice())
		if a.Is6() {
			sort = "6" + hex.EncodeToString(a.AsSlice())
		}
		if m := sort + "|" + a.String(); !got[m] {
			t.Errorf("%s: no kgx member %s", a, m)
		}
	}
	f.indexed(t)
}

// An address marked by a node of the previous version once kgx exists
// (a rolling upgrade) is in kgs only; deleting kgx rebuilds it with that
// address on the next write, as the package says.
func TestKnownGoodIndexRebuild(t *testing.T) {
	srv := redistest.Start(t)
	f := newKGFixture(t, srv, 1000)
	all := addrs("192.0.2.1", "192.0.2.200", "192.0.3.1")
	f.mark(t, time.Hour, all[0], all[2])
	writeOldLayout(t, f.rdb, f.prefix, time.UnixMilli(f.now.Load()).Add(time.Hour), all[1:2])
	if err := f.rdb.Del(context.Background(), f.prefix+"kgx").Err(); err != nil {
		t.Fatal(err)
	}
	f.revoke(t, "192.0.2.0/24")
	f.want(t, all, func(a netip.Addr) bool { return a == all[2] })
}
