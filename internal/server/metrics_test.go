package server

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// httpGet calls the HTTP admin listener with an optional bearer token.
func httpGet(t *testing.T, ts *testServer, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+ts.srv.Addr("admin")+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one sample line of the exposition text.
func metric(t *testing.T, text, name string, labels ...string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if ok {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("bad sample %q", l)
			}
			return v
		}
	}
	return 0
}

// The HTTP admin API requires the token and refuses bad input clearly;
// /metrics moves with traffic: deliveries, auth failures, refusals, bans.
func TestAdminHTTPAndMetrics(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Shield.Rules = []string{"deny 127.0.0.130 reject"}
		c.Shield.Thresholds.SetCount("auth_failure", 2)
	})
	tokb, err := os.ReadFile(AdminTokenFile(ts.cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokb))

	for _, path := range []string{"/metrics", "/v1/live", "/v1/bans", "/v1/status"} {
		if code, body := httpGet(t, ts, "GET", path, "", ""); code != 401 || !strings.Contains(body, "bearer token") {
			t.Errorf("%s without token: %d %q", path, code, body)
		}
		if code, _ := httpGet(t, ts, "GET", path, "wrong", ""); code != 401 {
			t.Errorf("%s with a wrong token: %d", path, code)
		}
	}
	if code, body := httpGet(t, ts, "GET", "/", "", ""); code != 200 || !strings.Contains(body, "agua") {
		t.Errorf("dashboard page: %d", code)
	}
	for _, bad := range []struct{ method, path, body, want string }{
		{"POST", "/v1/bans", `{"prefix":"not-an-ip"}`, "not an address or CIDR"},
		{"POST", "/v1/bans", `{"prefix":"192.0.2.1","for":"forever"}`, "bad duration"},
		{"POST", "/v1/bans", `{"prefix":"192.0.2.1","action":"allow"}`, "reject, drop or tarpit"},
		{"POST", "/v1/bans", `{`, "bad request body"},
		{"DELETE", "/v1/bans", ``, "say which bans to lift"},
		{"GET", "/v1/why?ip=nope", ``, "not an IP address"},
		{"GET", "/v1/nonsense", ``, "no such API route"},
	} {
		code, body := httpGet(t, ts, bad.method, bad.path, tok, bad.body)
		if code < 400 || code >= 500 || !strings.Contains(body, bad.want) || !strings.Contains(body, `"error"`) {
			t.Errorf("%s %s %s: %d %q", bad.method, bad.path, bad.body, code, body)
		}
	}

	_, before := httpGet(t, ts, "GET", "/metrics", tok, "")
	// Traffic: a message, two auth failures (then a ban), a denied client.
	c := dial(t, ts.srv.Addr("smtp"))
	c.expect("220 ")
	c.cmd("EHLO client.example", "250")
	if got := c.deliver("a@elsewhere.example", []string{testUser}, "Subject: m\r\n\r\nx\r\n"); !strings.HasPrefix(got, "250") {
		t.Fatal(got)
	}
	sub := dialFrom(t, ts.srv.Addr("submission"), "127.0.0.131")
	sub.expect("220 ")
	sub.cmd("EHLO brute.example", "250")
	sub.cmd("AUTH PLAIN "+plainAuth(testUser, "wrong-1"), "535")
	sub.send("AUTH PLAIN " + plainAuth(testUser, "wrong-2"))
	sub.expect("421")
	dialFrom(t, ts.srv.Addr("smtp"), "127.0.0.130").expect("554 5.7.1")

	code, after := httpGet(t, ts, "GET", "/metrics", tok, "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	moved := []struct {
		name   string
		labels []string
	}{
		{"agua_messages_total", []string{`listener="smtp"`, `result="accepted"`}},
		{"agua_message_bytes_total", []string{`listener="smtp"`}},
		{"agua_delivery_seconds_count", nil},
		{"agua_auth_total", []string{`listener="submission"`, `result="failure"`}},
		{"agua_connections_total", []string{`listener="smtp"`, `outcome="rejected"`}},
		{"agua_connections_total", []string{`listener="smtp"`, `outcome="served"`}},
		{"agua_bans_issued_total", []string{`reason="auth_failure"`}},
		// 127.0.0.1 is allowlisted: its message goes in the first class.
		{"agua_delivery_queue_granted_total", []string{`class="first"`}},
	}
	for _, m := range moved {
		if b, a := metric(t, before, m.name, m.labels...), metric(t, after, m.name, m.labels...); a <= b {
			t.Errorf("%s%v did not move: %v -> %v", m.name, m.labels, b, a)
		}
	}
	if metric(t, after, "agua_bans_active") < 1 {
		t.Error("agua_bans_active is 0 with a ban in force")
	}
	for _, name := range []string{"agua_lockdown", "agua_rule_reloads_total", "agua_sessions_active", "agua_shield_rules", "agua_delivery_queue_waiting", "agua_delivery_queue_busy", "agua_auth_abandoned_total", "go_goroutines", "process_resident_memory_bytes"} {
		if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(after) {
			t.Errorf("metric %s missing", name)
		}
	}
}
