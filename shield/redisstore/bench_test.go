package redisstore_test

import (
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
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
