package redisstore_test

import (
	"context"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
	"github.com/agua-mail/agua/shield/redisstore"
	"github.com/agua-mail/agua/shield/redisstore/redistest"
)

// BenchmarkPropagation measures how long a ban made on node 1 takes to be
// enforced by node 2 (its Decide refuses the address): node 1's write
// queue, one Lua script with its PUBLISH, node 2's subscriber and the swap
// of its ban table. It reports p50 and p99 over b.N bans:
//
//	go test -run '^$' -bench Propagation -benchtime 1000x ./shield/redisstore/
func BenchmarkPropagation(b *testing.B) {
	srv := redistest.Start(b)
	n1 := startNode(b, srv.URL(0), "node1", "127.0.1.1")
	n2 := startNode(b, srv.URL(0), "node2", "127.0.1.2")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		start := time.Now()
		if err := n1.sh.Ban(netip.PrefixFrom(a, 32), time.Hour, "bench", shield.Reject); err != nil {
			b.Fatal(err)
		}
		deadline := start.Add(waitDeadline)
		for !n2.sh.Decide(a, "svc").Denied() {
			if time.Now().After(deadline) {
				b.Fatalf("ban %d not propagated", i)
			}
			runtime.Gosched()
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkDecideCluster is the accept-time decision with the cluster off
// (the default LocalStore) and on (a Redis store holding the same 1,000
// bans, made on another node): Decide reads the same local snapshot either
// way, so the figures should match.
//
//	go test -run '^$' -bench DecideCluster ./shield/redisstore/
func BenchmarkDecideCluster(b *testing.B) {
	addrs := make([]netip.Addr, 4096)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(i * 7)})
	}
	run := func(b *testing.B, sh *shield.Shield) {
		denied := 0
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if sh.Decide(addrs[i%len(addrs)], "svc").Denied() {
				denied++
			}
			i++
		}
		if denied == 0 {
			b.Fatal("no address denied: the bans are not in force")
		}
	}
	ban := func(b *testing.B, sh *shield.Shield) {
		for i := range 1000 {
			if err := sh.Ban(netip.PrefixFrom(addrs[i*4], 32), time.Hour, "bench", shield.Reject); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("off", func(b *testing.B) {
		sh, err := shield.New(shield.DefaultConfig(), shield.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer sh.Close()
		ban(b, sh)
		run(b, sh)
	})
	b.Run("redis", func(b *testing.B) {
		srv := redistest.Start(b)
		n1 := startNode(b, srv.URL(0), "node1", "127.0.1.1")
		n2 := startNode(b, srv.URL(0), "node2", "127.0.1.2")
		ban(b, n1.sh)
		waitUntil(b, "node2 has the bans", func() bool { return len(n2.sh.Bans()) == 1000 })
		run(b, n2.sh)
	})
}

// BenchmarkRevokeNetwork revokes the known-good status of a /24 (256
// addresses) among 100,000 known-good addresses, as every network ban
// does; each revoked /24 is marked again outside the timer, so the index
// keeps its size:
//
//	go test -run '^$' -bench RevokeNetwork -benchtime 200x ./shield/redisstore/
func BenchmarkRevokeNetwork(b *testing.B) {
	const total, nets = 100_000, 100_000 / 256
	srv := redistest.Start(b)
	open := func() *redisstore.Store {
		st, err := redisstore.Open(redisstore.Options{URL: srv.URL(0), Capacity: 2 * total,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	mark := func(st *redisstore.Store, from, to int) error {
		for i := from; i < to; i++ {
			if err := st.MarkKnownGood(ctx, addr(i), until); err != nil {
				return err
			}
		}
		return nil
	}
	// Eight handles fill the index at once (each writes in order).
	var wg sync.WaitGroup
	for w := range 8 {
		st := open()
		wg.Go(func() {
			if err := mark(st, w*total/8, (w+1)*total/8); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	st := open()
	b.ResetTimer()
	for i := range b.N {
		n := i % nets
		if err := st.RevokeKnownGood(ctx, netip.PrefixFrom(addr(n*256), 24)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, ok, _ := st.KnownGood(ctx, addr(n*256+7)); ok {
			b.Fatalf("%s still known-good", addr(n*256+7))
		}
		if err := mark(st, n*256, (n+1)*256); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
