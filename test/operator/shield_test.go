package operator

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/test/internal/harness"
)

// Item 2: agua reload says what it loaded, file by file, and fails when a
// configured rule file has gone. Smaller items: status names the admin
// listener; why -json uses the config's names and durations.
func TestReloadStatusWhy(t *testing.T) {
	extra := filepath.Join(t.TempDir(), "extra.rules")
	if err := os.WriteFile(extra, []byte("# blocklist\ndeny 198.51.100.0/24\ndeny 203.0.113.9 drop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := harness.New(t, harness.Options{Extra: fmt.Sprintf("[shield]\nrule_files = [\"shield.rules\", %q]\n", extra)})
	srv.Start(t)

	out := srv.Agua(t, "", "reload")
	if !strings.Contains(out, extra+": 3 line(s), 2 rule(s)") || !strings.Contains(out, "shield.rules: ") {
		t.Errorf("reload does not say what it loaded:\n%s", out)
	}
	os.Remove(extra)
	out, err := srv.TryAgua("", "reload")
	if err == nil || !strings.Contains(out, extra) || !strings.Contains(out, "does not exist") {
		t.Errorf("reload with a rule file gone: %v\n%s", err, out)
	}

	var st struct {
		Listeners map[string]string `json:"listeners"`
	}
	if err := json.Unmarshal([]byte(srv.Agua(t, "", "status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Listeners[srv.Admin] != "admin" {
		t.Errorf("status listeners %v lack the admin listener %s", st.Listeners, srv.Admin)
	}

	var why struct {
		Limits map[string]any `json:"limits"`
	}
	out = srv.Agua(t, "", "why", "192.0.2.1", "-json")
	if err := json.Unmarshal([]byte(out), &why); err != nil {
		t.Fatal(err)
	}
	if why.Limits["per_ip_conns"] == nil || why.Limits["evict_idle"] != "5s" || why.Limits["PerIPConns"] != nil {
		t.Errorf("why -json limits use Go names or nanoseconds: %v", why.Limits)
	}
}

// Item 4: a block wider than /8 (IPv4) or /32 (IPv6) is refused without
// -force, saying what it would cover; the dashboard's live data marks
// allowlisted talkers, so it offers no Block button for them.
func TestBlockWidthAndAllowlistedTalkers(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.Start(t)
	for _, tc := range []struct{ prefix, want string }{
		{"0.0.0.0/0", "every IPv4 address"},
		{"::/0", "every IPv6 address"},
		{"10.0.0.0/7", "10.0.0.0 to 11.255.255.255"},
		{"2001:db8::/31", "2001:db8:: to 2001:db9:ffff:ffff:ffff:ffff:ffff:ffff"},
	} {
		out, err := srv.TryAgua("", "block", tc.prefix)
		if err == nil || !strings.Contains(out, tc.want) || !strings.Contains(out, "-force") {
			t.Errorf("block %s: %v\n%s", tc.prefix, err, out)
		}
	}
	// An allowlisted address: the refusal names it and the way to its
	// rule. It said only "prefix is allowlisted".
	if out, err := srv.TryAgua("", "block", "127.0.0.1"); err == nil ||
		!strings.Contains(out, "cannot block 127.0.0.1/32: prefix is allowlisted: it is never refused, limited or banned (`agua why 127.0.0.1` names the rule)") {
		t.Errorf("block 127.0.0.1: %v\n%s", err, out)
	}
	if out := srv.Agua(t, "", "bans"); !strings.Contains(out, "no bans") {
		t.Fatalf("a refused block was applied:\n%s", out)
	}
	srv.Agua(t, "", "block", "10.0.0.0/8")
	srv.Agua(t, "", "block", "2001:db8::/32")
	srv.Agua(t, "", "block", "10.0.0.0/7", "-force")

	// One connection from the allowlisted 127.0.0.1, one from 127.0.0.2.
	for _, src := range []string{"127.0.0.1", "127.0.0.2"} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", srv.SMTP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := adminGet(t, srv, "/v1/live")
		var live struct {
			Top []struct {
				Prefix string `json:"prefix"`
				Exempt string `json:"exempt"`
			} `json:"top_addresses"`
		}
		if err := json.Unmarshal(body, &live); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		exempt := map[string]string{}
		for _, tk := range live.Top {
			exempt[tk.Prefix] = tk.Exempt
		}
		e1, ok1 := exempt["127.0.0.1/32"]
		e2, ok2 := exempt["127.0.0.2/32"]
		if ok1 && ok2 {
			if !strings.Contains(e1, "allowlisted") || e2 != "" {
				t.Errorf("talkers: 127.0.0.1 exempt %q, 127.0.0.2 exempt %q", e1, e2)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live view never showed both connections: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Smaller items: agua top -once shows rates (two samples), and agua bans
// lists the saved bans while agua is stopped.
func TestTopRatesAndBansWhenStopped(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.Start(t)
	srv.Agua(t, "", "block", "192.0.2.0/24", "-reason", "scanner", "-for", "2h")
	srv.Agua(t, "", "block", "198.51.100.0/24")
	out := srv.Agua(t, "", "top", "-once", "-interval", "200ms")
	rows := 0
	inTable := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "LISTENER" {
			inTable = true
			continue
		}
		if !inTable || len(f) == 0 {
			inTable = inTable && len(f) > 0
			continue
		}
		rows++
		if f[2] == "-" || f[3] == "-" {
			t.Errorf("top -once has no rate: %q", line)
		}
	}
	if rows == 0 {
		t.Fatalf("top -once printed no listener:\n%s", out)
	}
	srv.Stop(t)
	out, err := srv.TryAgua("", "bans")
	if err != nil || !strings.Contains(out, "192.0.2.0/24") || !strings.Contains(out, "scanner") || !strings.Contains(out, "not running") {
		t.Errorf("bans while stopped: %v\n%s", err, out)
	}
	// Item 5: the attack report names the operator's blocks once, by the
	// reason given.
	out = srv.Agua(t, "", "report", "attack", "-since", "1h")
	if strings.Contains(out, "manual (") || !strings.Contains(out, "by the operator:    2 (no reason given 1, scanner 1)") {
		t.Errorf("attack report on the operator's blocks:\n%s", out)
	}
}

// agua bans -json and GET /v1/bans give an empty JSON list when there is
// no ban, running or stopped, as agua queue list -json and GET
// /v1/suspensions do: a script's `jq '.[]'` works on it. They printed
// null, on which jq fails ("Cannot iterate over null").
func TestBansJSONEmptyIsAList(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.Start(t)
	isEmptyList := func(what, out string) {
		t.Helper()
		var v []json.RawMessage
		if err := json.Unmarshal([]byte(out), &v); err != nil || v == nil || len(v) != 0 {
			t.Errorf("%s: %q, want []", what, out)
		}
	}
	isEmptyList("bans -json", srv.Agua(t, "", "bans", "-json"))
	isEmptyList("GET /v1/bans", string(adminGet(t, srv, "/v1/bans")))
	srv.Stop(t)
	isEmptyList("bans -json while stopped", srv.Agua(t, "", "bans", "-json"))
}

// adminGet is the body of GET path on srv's admin HTTP listener, with the
// token of its data folder.
func adminGet(t *testing.T, srv *harness.Server, path string) []byte {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(srv.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+srv.Admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// agua why says how near an address is to a behaviour ban: each event
// counted against it with its threshold, and why -json has the
// thresholds under their config names. It said "auth_failure = 1 in the
// current window", without the window or the count that bans.
func TestWhyShowsThresholds(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.Start(t)
	srv.AddUser(t, "alice@example.test", "a long secret")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 12, 0, 1)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", srv.POP3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	for _, cmd := range []string{"", "USER alice@example.test", "PASS wrong"} {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		if l, err := r.ReadString('\n'); err != nil {
			t.Fatalf("%q: %v", cmd, err)
		} else if cmd == "PASS wrong" && !strings.HasPrefix(l, "-ERR [AUTH]") {
			t.Fatalf("PASS wrong: %q", l)
		}
	}
	out := srv.Agua(t, "", "why", "127.12.0.1")
	if !strings.Contains(out, "events:    auth_failure = 1 within 10m0s (10 ban the address)") {
		t.Errorf("why after a failed login:\n%s", out)
	}
	var why struct {
		Thresholds map[string]struct {
			Count  int    `json:"count"`
			Window string `json:"window"`
		} `json:"thresholds"`
	}
	if err := json.Unmarshal([]byte(srv.Agua(t, "", "why", "127.12.0.1", "-json")), &why); err != nil {
		t.Fatal(err)
	}
	if th := why.Thresholds["auth_failure"]; th.Count != 10 || th.Window != "10m0s" {
		t.Errorf("why -json thresholds: %+v", why.Thresholds)
	}
}
