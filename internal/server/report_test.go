package server

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/report"
	"github.com/agua-mail/agua/shield"
)

// TestFloodLogsAndHistory: 10,000 connections refused by a deny rule
// produce a handful of log lines, and the history served on the admin
// socket (GET /v1/history) counts every one of them; the attack report
// names the network (the abuse report does not: a refusal is not abuse).
func TestFloodLogsAndHistory(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Shield.Rules = []string{"deny 127.0.9.0/24 drop"}
		c.Shield.LogInterval = 100 * time.Millisecond
	})
	start := time.Now()
	addr := ts.srv.Addr("smtp")
	before := strings.Count(ts.logs.String(), "\n")
	const n = 10_000
	for i := range n {
		src := fmt.Sprintf("127.0.9.%d", 1+i%10)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		if c, err := d.Dial("tcp", addr); err == nil {
			c.Close()
		}
	}
	denied := regexp.MustCompile(`msg="shield denied" addr=127\.0\.9\.[0-9/]+ count=(\d+)`) // per address, or the /24 rolled up
	counted := func() int {
		sum := 0
		for _, m := range denied.FindAllStringSubmatch(ts.logs.String(), -1) {
			k, _ := strconv.Atoi(m[1])
			sum += k
		}
		return sum
	}
	deadline := time.Now().Add(30 * time.Second)
	for counted() < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := counted(); got != n {
		t.Fatalf("log lines count %d refusals, want %d", got, n)
	}
	lines := strings.Count(ts.logs.String(), "\n") - before
	t.Logf("%d refused connections: %d log lines", n, lines)
	if lines > 20 {
		t.Errorf("%d log lines for %d refused connections (want at most 20):\n%s", lines, n, ts.logs)
	}

	// A harvester, for the events.
	c := dialFrom(t, addr, "127.0.8.1")
	c.expect("220")
	c.cmd("EHLO harvester.example", "250")
	c.cmd("MAIL FROM:<x@harvester.example>", "250")
	for i := range 3 {
		c.cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), "550 5.1.1")
	}

	var snap shield.HistorySnapshot
	q := url.Values{"since": {start.Add(-time.Minute).UTC().Format(time.RFC3339)}, "offending": {"true"}}
	if err := admin.NewClient(AdminSocket(ts.cfg)).Do("GET", "/v1/history?"+q.Encode(), nil, &snap); err != nil {
		t.Fatal(err)
	}
	var refused, unknown uint64
	for _, a := range snap.Addrs {
		refused += a.RefusedTotal()
		unknown += a.Events["unknown_recipient"]
	}
	if refused != n || unknown != 3 {
		t.Errorf("history: %d refused, %d unknown recipients; want %d, 3", refused, unknown, n)
	}
	// The flood refused by the operator's rule is in the attack report, not
	// in an abuse report: being refused is not abuse.
	var out, att strings.Builder
	report.Abuse(context.Background(), snap, report.AbuseOptions{Hostname: "mx.test"}).WriteText(&out)
	if strings.Contains(out.String(), "127.0.9.") {
		t.Errorf("abuse report names the rule-refused flood:\n%s", out.String())
	}
	report.Attack(snap, report.AttackOptions{Hostname: "mx.test"}).WriteText(&att)
	if !strings.Contains(att.String(), "127.0.9.0/24") {
		t.Errorf("attack report:\n%s", att.String())
	}
}
