package server

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/shield/redisstore/redistest"
)

// startNodes starts three agua servers on 127.0.1.1-3 sharing one Redis.
func startNodes(t *testing.T, url string) []*testServer {
	var nodes []*testServer
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.1.%d", i)
		nodes = append(nodes, startServer(t, func(c *config.Config) {
			c.Cluster = config.ClusterConfig{Redis: url, Node: fmt.Sprintf("node%d", i)}
			c.SMTP.Listen = []string{ip + ":0"}
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
	var st struct {
		Cluster *ClusterStatus `json:"cluster"`
	}
	waitFor(t, "agua status shows three connected nodes", func() bool {
		if err := cli(nodes[1]).Do("GET", "/v1/status", nil, &st); err != nil {
			t.Fatal(err)
		}
		return st.Cluster != nil && st.Cluster.Connected && st.Cluster.Node == "node2" && len(st.Cluster.Nodes) == 3
	})
	// Redis gone: status says so, in one log line per node.
	redis.Stop()
	waitFor(t, "agua status says disconnected", func() bool {
		if err := cli(nodes[1]).Do("GET", "/v1/status", nil, &st); err != nil {
			t.Fatal(err)
		}
		return st.Cluster != nil && !st.Cluster.Connected
	})
	if got := smtpGreeting(t, nodes[1], legit); !strings.HasPrefix(got, "220 ") {
		t.Errorf("legitimate client refused while Redis is down: %q", got)
	}
	if n := strings.Count(nodes[1].logs.String(), "redis unreachable"); n != 1 {
		t.Errorf("%d \"redis unreachable\" log lines, want 1", n)
	}
}
