package redisstore_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
	"github.com/agua-mail/agua/shield/redisstore"
	"github.com/agua-mail/agua/shield/redisstore/redistest"
)

// waitDeadline bounds every wait for a condition; nothing is timed.
const waitDeadline = 15 * time.Second

// node is one service behind a shield on a Redis store: a listener on its
// own loopback address that greets every client it serves.
type node struct {
	name  string
	sh    *shield.Shield
	st    *redisstore.Store
	addr  string
	ln    net.Listener
	close sync.Once
}

func startNode(t testing.TB, url, name, ip string) *node {
	t.Helper()
	st, err := redisstore.Open(redisstore.Options{URL: url, Node: name, Heartbeat: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return startNodeStore(t, st, name, ip)
}

// startNodeStore starts a node on a store the caller opened.
func startNodeStore(t testing.TB, st *redisstore.Store, name, ip string) *node {
	t.Helper()
	cfg := shield.DefaultConfig()
	cfg.LogInterval = time.Hour
	sh, err := shield.New(cfg, shield.Options{Store: st, Node: name, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, sh: sh, st: st, addr: inner.Addr().String()}
	n.ln = sh.Listener(inner, shield.ListenerConfig{Name: "svc", Reject: func(c net.Conn, d shield.Decision) {
		fmt.Fprintf(c, "NO %s\r\n", d.Reason)
	}})
	go func() {
		for {
			c, err := n.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "HELLO %s\r\n", name)
				// FAIL is a failed login: answered "NO <reason>" and closed
				// when it gets the client banned, else "FAILED".
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if sc.Text() != "FAIL" {
						continue
					}
					if d := shield.Report(c, shield.AuthFailure); d.Denied() {
						fmt.Fprintf(c, "NO %s\r\n", d.Reason)
						return
					}
					fmt.Fprintf(c, "FAILED\r\n")
				}
			}()
		}
	}()
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	n.close.Do(func() {
		n.ln.Close()
		n.sh.Close()
		n.st.Close()
	})
}

// greet connects from the source address from and returns the first line.
func (n *node) greet(t *testing.T, from string) string {
	t.Helper()
	return n.session(from, false)
}

// fail connects from the source address from, fails a login and returns
// the answer ("FAILED", or "NO ..." once banned).
func (n *node) fail(t *testing.T, from string) string {
	t.Helper()
	return n.session(from, true)
}

// session connects from the source address from, reads the first line
// and, with fail, sends FAIL and reads the answer; it returns the last line.
func (n *node) session(from string, fail bool) string {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", n.addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil && line == "" {
		return "read: " + err.Error()
	}
	if !fail || !strings.HasPrefix(line, "HELLO ") {
		return strings.TrimSpace(line)
	}
	fmt.Fprintf(c, "FAIL\r\n")
	line, _ = r.ReadString('\n')
	return strings.TrimSpace(line)
}

func (n *node) denies(a string) bool { return n.sh.Decide(netip.MustParseAddr(a), "svc").Denied() }

// waitUntil waits for cond within waitDeadline.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", waitDeadline, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func threeNodes(t *testing.T, url string) []*node {
	return []*node{
		startNode(t, url, "node1", "127.0.1.1"),
		startNode(t, url, "node2", "127.0.1.2"),
		startNode(t, url, "node3", "127.0.1.3"),
	}
}

// A ban on node 1 is refused on nodes 2 and 3; an operator's block on one
// node is lifted by an unblock on another.
func TestClusterBanReachesEveryNode(t *testing.T) {
	srv := redistest.Start(t)
	nodes := threeNodes(t, srv.URL(0))
	const attacker, legit = "127.0.9.9", "127.0.2.2"
	for _, n := range nodes {
		if got := n.greet(t, attacker); got != "HELLO "+n.name {
			t.Fatalf("%s before the ban: %q", n.name, got)
		}
	}
	if err := nodes[0].sh.Ban(netip.MustParsePrefix(attacker+"/32"), time.Hour, "manual block", shield.Reject); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		waitUntil(t, n.name+" refuses the ban made on node1", func() bool { return n.denies(attacker) })
		if got := n.greet(t, attacker); !strings.HasPrefix(got, "NO ") {
			t.Errorf("%s served the banned client: %q", n.name, got)
		}
		if got := n.greet(t, legit); got != "HELLO "+n.name {
			t.Errorf("%s refused a legitimate client: %q", n.name, got)
		}
	}
	// Unblock on node 3: every node serves the client again.
	if !nodes[2].sh.Unban(netip.MustParsePrefix(attacker + "/32")) {
		t.Fatal("node3 did not hold the ban")
	}
	for _, n := range nodes[:2] {
		waitUntil(t, n.name+" lifts the ban lifted on node3", func() bool { return !n.denies(attacker) })
		if got := n.greet(t, attacker); got != "HELLO "+n.name {
			t.Errorf("%s after unblock: %q", n.name, got)
		}
	}
	// Lockdown on node 2 reaches node 1 and 3, and so does its end.
	nodes[1].sh.SetLockdown(true)
	for _, n := range []*node{nodes[0], nodes[2]} {
		waitUntil(t, n.name+" in lockdown", n.sh.Lockdown)
	}
	nodes[1].sh.SetLockdown(false)
	for _, n := range []*node{nodes[0], nodes[2]} {
		waitUntil(t, n.name+" out of lockdown", func() bool { return !n.sh.Lockdown() })
	}
	// Every node sees the other two through their heartbeats.
	for _, n := range nodes {
		waitUntil(t, n.name+" sees three nodes", func() bool { return len(n.st.Status().Nodes) == 3 })
	}
}

// Redis killed under load: every legitimate client is still served, the
// bans each node knew are still enforced, a ban made meanwhile holds
// locally, and when Redis returns empty every node republishes its bans
// and learns the others'.
func TestClusterRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	nodes := threeNodes(t, srv.URL(0))
	const before, during = "127.0.9.1", "127.0.9.2"
	if err := nodes[0].sh.Ban(netip.MustParsePrefix(before+"/32"), time.Hour, "before", shield.Reject); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		waitUntil(t, n.name+" has the first ban", func() bool { return n.denies(before) })
	}

	// Load: legitimate clients on every node, all along.
	var served, refused atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				// Legitimate users: each from its own network, at a
				// human pace (a flood from one /24 is rate limited, rightly).
				from := fmt.Sprintf("127.%d.%d.7", 20+j%200, 1+i)
				time.Sleep(2 * time.Millisecond)
				if got := n.greet(t, from); got == "HELLO "+n.name {
					served.Add(1)
				} else {
					refused.Add(1)
					failures.Store(from+"→"+n.name, got)
				}
			}
		}()
	}
	load := served.Load()
	waitUntil(t, "load running", func() bool { return served.Load() > load+30 })

	srv.Stop()
	for _, n := range nodes {
		waitUntil(t, n.name+" says it is disconnected", func() bool { return !n.st.Status().Connected })
	}
	// Down: the first ban holds everywhere; a new ban holds where it was made.
	for _, n := range nodes {
		if !n.denies(before) {
			t.Errorf("%s forgot a ban while Redis is down", n.name)
		}
	}
	if err := nodes[1].sh.Ban(netip.MustParsePrefix(during+"/32"), time.Hour, "during", shield.Reject); err != nil {
		t.Fatal(err)
	}
	if got := nodes[1].greet(t, during); !strings.HasPrefix(got, "NO ") {
		t.Errorf("node2 served a client it banned while Redis was down: %q", got)
	}
	// A brute force on one node is banned there at the threshold, as
	// without a cluster: its counters need no Redis.
	const brute = "127.0.9.5"
	th := shield.DefaultConfig().Thresholds["auth_failure"].Count
	for i := range th - 1 {
		if got := nodes[2].fail(t, brute); got != "FAILED" {
			t.Fatalf("failure %d while Redis is down: %q", i+1, got)
		}
	}
	if got := nodes[2].fail(t, brute); !strings.HasPrefix(got, "NO ") {
		t.Errorf("threshold-th failure on node3 while Redis is down: %q", got)
	}
	load = served.Load()
	waitUntil(t, "load served while Redis is down", func() bool { return served.Load() > load+30 })

	srv.Restart() // empty
	for _, n := range nodes {
		waitUntil(t, n.name+" reconnected", func() bool { return n.st.Status().Connected })
	}
	for _, n := range nodes {
		waitUntil(t, n.name+" has every ban after the resync", func() bool {
			return n.denies(before) && n.denies(during) && n.denies(brute)
		})
	}
	// Redis learnt them again from the nodes.
	fresh, err := redisstore.Open(redisstore.Options{URL: srv.URL(0), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	waitUntil(t, "Redis holds the three bans again", func() bool {
		bans, err := fresh.Bans(t.Context())
		return err == nil && len(bans) == 3
	})
	close(stop)
	wg.Wait()
	if refused.Load() != 0 {
		failures.Range(func(k, v any) bool { t.Errorf("legitimate client refused: %s: %v", k, v); return true })
	}
	t.Logf("legitimate connections served: %d, refused: %d", served.Load(), refused.Load())
}

// An unblock made while a node was cut off from Redis is not undone when
// that node comes back and writes its bans back.
func TestClusterUnbanWhileCutOff(t *testing.T) {
	srv := redistest.Start(t)
	nodes := threeNodes(t, srv.URL(0))
	const addr = "127.0.9.3"
	if err := nodes[0].sh.Ban(netip.MustParsePrefix(addr+"/32"), time.Hour, "manual", shield.Reject); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node3 has the ban", func() bool { return nodes[2].denies(addr) })
	nodes[2].stop() // node 3 is gone, still banning addr in its memory ...
	nodes[1].sh.Unban(netip.MustParsePrefix(addr + "/32"))
	waitUntil(t, "node1 lifts the ban", func() bool { return !nodes[0].denies(addr) })
	// ... and a node that writes the same old ban back (as node 3 would on
	// its resync) is refused by the tombstone and told to drop it.
	late := startNode(t, srv.URL(0), "node3b", "127.0.1.3")
	rec := shield.BanRecord{Prefix: netip.MustParsePrefix(addr + "/32"), Reason: "manual", Action: shield.Reject, Manual: true,
		Created: time.Now().Add(-time.Minute), Expires: time.Now().Add(time.Hour), Count: 1}
	var dropped atomic.Bool
	stopW := late.st.Watch(func(c shield.Change) {
		if c.Kind == shield.ChangeUnban && c.Prefix == rec.Prefix {
			dropped.Store(true)
		}
	})
	defer stopW()
	if err := late.st.PutBan(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	if !dropped.Load() {
		t.Error("stale ban written back without telling the writer to drop it")
	}
	if bans, _ := late.st.Bans(t.Context()); len(bans) != 0 {
		t.Errorf("stale ban brought back: %+v", bans)
	}
	for _, n := range nodes[:2] {
		if n.denies(addr) {
			t.Errorf("%s refuses an unbanned client", n.name)
		}
	}
}

// A brute force spread round robin over three nodes from one address,
// each node seeing fewer failures than the threshold, is banned on every
// node at the cluster-wide threshold, and not one failure before.
func TestClusterCountersAddUp(t *testing.T) {
	srv := redistest.Start(t)
	nodes := threeNodes(t, srv.URL(0))
	const attacker = "127.0.9.6"
	th := shield.DefaultConfig().Thresholds["auth_failure"].Count // 10: 3 or 4 per node
	sent := func() (n uint64) {
		for _, x := range nodes {
			n += x.sh.Stats().Counters.Sent
		}
		return n
	}
	for i := range th - 1 {
		if got := nodes[i%3].fail(t, attacker); got != "FAILED" {
			t.Fatalf("failure %d on %s: %q", i+1, nodes[i%3].name, got)
		}
	}
	// Each failure is counted twice: for the address (auth_failure) and
	// for its /24 (network_auth_failure, distributed guessing).
	waitUntil(t, "every failure shared", func() bool { return sent() == 2*uint64(th-1) })
	for _, n := range nodes {
		if n.denies(attacker) {
			t.Fatalf("%s refuses below the cluster threshold", n.name)
		}
	}
	last := nodes[(th-1)%3]
	if got := last.fail(t, attacker); got != "FAILED" && !strings.HasPrefix(got, "NO ") && got != "" {
		t.Fatalf("threshold-th failure on %s: %q", last.name, got)
	}
	for _, n := range nodes {
		waitUntil(t, n.name+" refuses at the cluster threshold", func() bool { return n.denies(attacker) })
		if got := n.greet(t, attacker); !strings.HasPrefix(got, "NO ") {
			t.Errorf("%s served the attacker: %q", n.name, got)
		}
	}
	var crossed uint64
	for _, n := range nodes {
		crossed += n.sh.Stats().Counters.Crossed
	}
	if crossed != 1 {
		t.Errorf("%d nodes banned for the cluster total, want exactly 1", crossed)
	}
}
