package redisstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agua-mail/agua/shield"
	"github.com/agua-mail/agua/shield/redisstore"
	"github.com/agua-mail/agua/shield/redisstore/redistest"
)

// commandStats returns Redis's calls per command (INFO commandstats).
func commandStats(t testing.TB, rdb *redis.Client) map[string]int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int64)
	for _, line := range strings.Split(info, "\n") {
		// cmdstat_get:calls=12,usec=...
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, _ := strconv.ParseInt(calls, 10, 64)
		out[name] = n
	}
	return out
}

// delta returns the commands called between two commandStats, except
// INFO itself.
func delta(before, after map[string]int64) (map[string]int64, int64) {
	d := make(map[string]int64)
	var total int64
	for name, n := range after {
		if name == "info" {
			continue
		}
		if x := n - before[name]; x > 0 {
			d[name] = x
			total += x
		}
	}
	return d, total
}

// Accepted connections cost Redis nothing: INFO commandstats before and
// after 200 legitimate connections through a node's shield shows no
// command at all (the heartbeat is set to an hour so it stays out of the
// count). A ban costs a bounded handful, whatever the traffic.
func TestRedisOpsPerConnection(t *testing.T) {
	srv := redistest.Start(t)
	st, err := redisstore.Open(redisstore.Options{URL: srv.URL(0), Node: "node1", Heartbeat: time.Hour,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeStore(t, st, "node1", "127.0.1.1")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	waitUntil(t, "first heartbeat", func() bool { return len(st.Status().Nodes) == 1 })

	before := commandStats(t, rdb)
	const conns = 200
	for i := range conns {
		from := fmt.Sprintf("127.%d.%d.9", 20+i%100, 1+i/100)
		if got := n.greet(t, from); got != "HELLO node1" {
			t.Fatalf("connection %d from %s: %q", i, from, got)
		}
	}
	if acc := n.sh.Stats().Listeners["svc"].Accepted; acc < conns {
		t.Fatalf("accepted %d connections, want %d", acc, conns)
	}
	d, total := delta(before, commandStats(t, rdb))
	t.Logf("Redis commands for %d accepted connections: %d %v", conns, total, d)
	if total != 0 {
		t.Errorf("accept path used Redis: %d commands for %d connections: %v", total, conns, d)
	}

	// One ban: its script (SET, ZADD, XADD, PUBLISH inside one EVALSHA),
	// the known-good revocation of its address (MULTI, DEL, ZREM from
	// both indexes, PUBLISH, EXEC) and nothing per connection it then
	// refuses.
	// A first ban loads the scripts (EVALSHA, NOSCRIPT, EVAL): once per
	// Redis start, not per ban.
	execs := commandStats(t, rdb)["exec"]
	if err := n.sh.Ban(netip.MustParsePrefix("127.0.9.8/32"), time.Hour, "warm-up", shield.Reject); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "first ban stored", func() bool {
		bans, _ := st.Bans(context.Background())
		return len(bans) == 1
	})
	// The ban is stored before the store writer runs its known-good
	// revocation (one MULTI … EXEC): wait for that too, or it lands in
	// the count below.
	waitUntil(t, "first ban's known-good revocation", func() bool { return commandStats(t, rdb)["exec"] > execs })
	before = commandStats(t, rdb)
	if err := n.sh.Ban(netip.MustParsePrefix("127.0.9.9/32"), time.Hour, "ops", shield.Reject); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ban stored", func() bool {
		bans, _ := st.Bans(context.Background())
		return len(bans) == 2
	})
	for range 20 {
		if got := n.greet(t, "127.0.9.9"); !strings.HasPrefix(got, "NO ") {
			t.Fatalf("banned client served: %q", got)
		}
	}
	d, total = delta(before, commandStats(t, rdb))
	t.Logf("Redis commands for one ban and 20 refused connections (ZRANGEBYSCORE, MGET, HELLO: the test's own check): %d %v", total, d)
	d["zrangebyscore"], d["mget"], d["hello"] = 0, 0, 0 // the test's own Bans calls and their connection
	var store int64
	for _, x := range d {
		store += x
	}
	if store > maxOpsPerBan {
		t.Errorf("one ban cost %d Redis commands, want at most %d: %v", store, maxOpsPerBan, d)
	}
}

// maxOpsPerBan bounds the Redis commands one ban costs (counted by INFO
// commandstats, which counts the commands a script runs as well as the
// EVALSHA): the ban script's EVALSHA, GET, ZREMRANGEBYSCORE, ZSCORE,
// ZCARD, SET, ZADD, XADD, PUBLISH (9), and the known-good revocation's
// MULTI, DEL, ZREM kgs, ZREM kgx, PUBLISH, EXEC (6): 15, and 1 to spare.
const maxOpsPerBan = 16
