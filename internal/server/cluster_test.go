package server

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/shield/redisstore/redistest"
)

// startNodes starts three agua servers on 127.0.1.1-3 sharing one Redis;
// mutate, if any, changes every node's config.
func startNodes(t *testing.T, url string, mutate ...func(*config.Config)) []*testServer {
	var nodes []*testServer
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.1.%d", i)
		nodes = append(nodes, startServer(t, func(c *config.Config) {
			c.Cluster = config.ClusterConfig{Redis: url, Node: fmt.Sprintf("node%d", i)}
			c.SMTP.Listen = []string{ip + ":0"}
			c.SMTP.SubmissionListen = []string{ip + ":0"}
			for _, m := range mutate {
				m(c)
			}
		}))
	}
	return nodes
}

// smtpGreeting connects to the node's MX port from the given source address
// and returns the first line.
func smtpGreeting(t *testing.T, ts *testServer, from string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ts.srv.Addr("smtp"))
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// waitFor waits for cond with a bounded deadline; nothing is timed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 15*time.Second, what, cond)
}

// waitWithin polls cond until it holds; bound only stops a hung test.
func waitWithin(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", bound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// `agua block` on node 1 (through its admin socket, as the CLI does) is
// refused by nodes 2 and 3; `agua unblock` on node 3 serves the client
// again on every node; `agua status` shows the cluster.
func TestClusterBlockUnblock(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startNodes(t, redis.URL(0))
	const attacker, legit = "127.0.8.8", "127.0.2.2"
	for i, n := range nodes {
		if got := smtpGreeting(t, n, attacker); !strings.HasPrefix(got, "220 ") {
			t.Fatalf("node%d before the block: %q", i+1, got)
		}
	}
	cli := func(n *testServer) *admin.Client { return admin.NewClient(AdminSocket(n.cfg)) }
	var out map[string]any
	if err := cli(nodes[0]).Do("POST", "/v1/bans", admin.BanRequest{Prefix: attacker, Reason: "scanner"}, &out); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		waitFor(t, fmt.Sprintf("node%d refuses the blocked client", i+1), func() bool {
			return strings.HasPrefix(smtpGreeting(t, n, attacker), "554 ")
		})
		if got := smtpGreeting(t, n, legit); !strings.HasPrefix(got, "220 ") {
			t.Errorf("node%d refused a legitimate client: %q", i+1, got)
		}
	}
	if err := cli(nodes[2]).Do("DELETE", "/v1/bans?prefix="+attacker, nil, &out); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		waitFor(t, fmt.Sprintf("node%d serves the unblocked client", i+1), func() bool {
			return strings.HasPrefix(smtpGreeting(t, n, attacker), "220 ")
		})
	}
	// A block made on node 1 is listed on node 2 as node 1's.
	if err := cli(nodes[0]).Do("POST", "/v1/bans", admin.BanRequest{Prefix: "127.0.8.0/24", Reason: "scanners"}, &out); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node2 lists node1's block as node1's", func() bool {
		var bans []struct{ Prefix, Node string }
		if err := cli(nodes[1]).Do("GET", "/v1/bans", nil, &bans); err != nil {
			t.Fatal(err)
		}
		return len(bans) == 1 && bans[0].Prefix == "127.0.8.0/24" && bans[0].Node == "node1"
	})
	// agua report -cluster on node 3 covers node 1's blocks.
	waitFor(t, "node3's cluster history has node1's block", func() bool {
		var snap struct {
			Bans []struct{ Kind, Prefix, Node string }
		}
		if err := cli(nodes[2]).Do("GET", "/v1/history?since=1h&cluster=true", nil, &snap); err != nil {
			t.Fatal(err)
		}
		for _, b := range snap.Bans {
			if b.Kind == "ban" && b.Prefix == "127.0.8.0/24" && b.Node == "node1" {
				return true
			}
		}
		return false
	})
	var st struct {
		Cluster *ClusterStatus `json:"cluster"`
	}
	waitFor(t, "agua status shows three live nodes and the shared ban", func() bool {
		if err := cli(nodes[1]).Do("GET", "/v1/status", nil, &st); err != nil {
			t.Fatal(err)
		}
		if st.Cluster == nil || !st.Cluster.Connected || st.Cluster.Node != "node2" || len(st.Cluster.Nodes) != 3 || st.Cluster.Bans != 1 {
			return false
		}
		for _, n := range st.Cluster.Nodes {
			if !n.Alive || n.LastHeartbeat.IsZero() {
				return false
			}
		}
		return true
	})
	tokb, err := os.ReadFile(AdminTokenFile(nodes[1].cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokb))
	_, m := httpGet(t, nodes[1], "GET", "/metrics", tok, "")
	if metric(t, m, "agua_cluster_redis_up") != 1 || metric(t, m, "agua_cluster_nodes", `state="alive"`) != 3 || metric(t, m, "agua_cluster_shared_bans") != 1 {
		t.Errorf("cluster metrics while connected:\n%s", grepLines(m, "agua_cluster_"))
	}
	// Redis gone: status and metrics say so, in one log line per node.
	redis.Stop()
	waitFor(t, "agua status says disconnected", func() bool {
		if err := cli(nodes[1]).Do("GET", "/v1/status", nil, &st); err != nil {
			t.Fatal(err)
		}
		return st.Cluster != nil && !st.Cluster.Connected
	})
	_, m = httpGet(t, nodes[1], "GET", "/metrics", tok, "")
	if metric(t, m, "agua_cluster_redis_up") != 0 {
		t.Errorf("cluster metrics while Redis is down:\n%s", grepLines(m, "agua_cluster_"))
	}
	if got := smtpGreeting(t, nodes[1], legit); !strings.HasPrefix(got, "220 ") {
		t.Errorf("legitimate client refused while Redis is down: %q", got)
	}
	if n := strings.Count(nodes[1].logs.String(), "redis unreachable"); n != 1 {
		t.Errorf("%d \"redis unreachable\" log lines, want 1", n)
	}
}

// A brute force spread over the three nodes (one non-allowlisted address,
// round robin, each node seeing fewer failures than the threshold) is
// banned on every node at the cluster-wide threshold: not one failure
// before it, and `agua bans` on each node names the node that banned.
func TestClusterBruteForceSpread(t *testing.T) {
	redis := redistest.Start(t)
	const threshold = 6 // two failures per node: each stays under it alone
	nodes := startNodes(t, redis.URL(0), func(c *config.Config) { c.Shield.Thresholds.SetCount("auth_failure", threshold) })
	const attacker = "127.0.8.9"
	sent := func() (n uint64) {
		for _, ts := range nodes {
			n += ts.srv.Shield().Stats().Counters.Sent
		}
		return n
	}
	fail := func(i int) string {
		ts := nodes[i%3]
		c := dialFrom(t, ts.srv.Addr("submission"), attacker)
		c.expect("220 ")
		c.cmd("EHLO attacker.example", "250")
		// Another account every time: the per-account delay stays out of it.
		c.send("AUTH PLAIN " + plainAuth(fmt.Sprintf("guess%d@%s", i, testDomain), "wrong"))
		line, _ := c.reply()
		return strings.Join(line, " ")
	}
	for i := range threshold - 1 {
		if got := fail(i); !strings.HasPrefix(got, "535 ") {
			t.Fatalf("failure %d on node%d: %q", i+1, i%3+1, got)
		}
	}
	// Each failure is counted twice: for the address (auth_failure) and
	// for its /24 (network_auth_failure, distributed guessing).
	waitFor(t, "every failure shared", func() bool { return sent() == 2*(threshold-1) })
	for i, ts := range nodes {
		if got := smtpGreeting(t, ts, attacker); !strings.HasPrefix(got, "220 ") {
			t.Fatalf("node%d refused below the cluster threshold: %q", i+1, got)
		}
	}
	// The threshold-th failure, on the next node: that node (or its flush
	// 100 ms later, which may close the session while it waits out the
	// failed-login delay) bans, and every node refuses.
	if got := fail(threshold - 1); got != "" && !strings.HasPrefix(got, "535 ") && !strings.HasPrefix(got, "421 ") {
		t.Fatalf("threshold-th failure: %q", got)
	}
	for i, ts := range nodes {
		waitFor(t, fmt.Sprintf("node%d refuses the attacker", i+1), func() bool {
			return strings.HasPrefix(smtpGreeting(t, ts, attacker), "554 ")
		})
		if got := smtpGreeting(t, ts, "127.0.8.10"); !strings.HasPrefix(got, "220 ") {
			t.Errorf("node%d refused a legitimate neighbour: %q", i+1, got)
		}
	}
	issuer := ""
	for i, ts := range nodes {
		var bans []struct {
			Prefix, Reason, Node string
		}
		if err := admin.NewClient(AdminSocket(ts.cfg)).Do("GET", "/v1/bans", nil, &bans); err != nil {
			t.Fatal(err)
		}
		if len(bans) != 1 || bans[0].Prefix != attacker+"/32" || bans[0].Reason != "auth_failure" || !strings.HasPrefix(bans[0].Node, "node") {
			t.Fatalf("node%d bans: %+v", i+1, bans)
		}
		if issuer == "" {
			issuer = bans[0].Node
		} else if bans[0].Node != issuer {
			t.Errorf("node%d says %s issued the ban, node1 says %s", i+1, bans[0].Node, issuer)
		}
	}
}

// grepLines returns the lines of text that contain sub.
func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The dashboard of node 2 shows the cluster: its three nodes with their
// heartbeats, a block made on node 1 as node 1's, and Redis going away.
func TestClusterDashboard(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startNodes(t, redis.URL(0))
	ctx := signIn(t, nodes[1])
	for _, name := range []string{"node1", "node2", "node3"} {
		if err := chromedp.Run(ctx, chromedp.WaitVisible(`#cluster-nodes tr[data-node="`+name+`"]`, chromedp.ByQuery)); err != nil {
			t.Fatalf("%s not on the dashboard: %v", name, err)
		}
	}
	var out map[string]any
	if err := admin.NewClient(AdminSocket(nodes[0].cfg)).Do("POST", "/v1/bans", admin.BanRequest{Prefix: "127.0.8.7", Reason: "scanner"}, &out); err != nil {
		t.Fatal(err)
	}
	text := func(sel string) string {
		var s string
		chromedp.Run(ctx, chromedp.Text(sel, &s, chromedp.ByQuery, chromedp.AtLeast(0)))
		return s
	}
	if err := chromedp.Run(ctx, chromedp.WaitVisible(`#bans tr[data-prefix="127.0.8.7/32"]`, chromedp.ByQuery)); err != nil {
		t.Fatalf("node1's block not on node2's dashboard: %v", err)
	}
	if got := text(`#bans tr[data-prefix="127.0.8.7/32"] td:nth-child(7)`); got != "node1" {
		t.Errorf("ban's node on the dashboard: %q", got)
	}
	waitFor(t, "the dashboard counts the shared ban", func() bool {
		s := text("#cluster-state")
		return strings.Contains(s, "connected") && strings.Contains(s, "1 shared bans")
	})
	redis.Stop()
	waitFor(t, "the dashboard says Redis is unreachable", func() bool { return strings.Contains(text("#cluster-state"), "UNREACHABLE") })
}
