package redisstore_test

import (
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
