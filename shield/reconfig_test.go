package shield

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestReconfigureThreshold: a lower protocol_error threshold applied to
// the running shield bans at the new count, on a connection opened before
// the change.
func TestReconfigureThreshold(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "t", Reject: replyReject})
	cl := dialFrom(t, srv.addr, "127.0.21.1")
	cl.expect("220")
	for range 3 {
		cl.cmd("BOGUS") // 3 < 10: allowed under the default
	}
	cfg := testConfig()
	cfg.Thresholds.SetCount("protocol_error", 4)
	if err := h.s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	// The count so far stays: the 4th error crosses the new threshold.
	if got := cl.cmd("BOGUS"); !strings.HasPrefix(got, "554") {
		t.Fatalf("4th protocol error after lowering the threshold: %q, want a 554 ban", got)
	}
	if len(h.s.Bans()) != 1 {
		t.Fatalf("bans: %+v", h.s.Bans())
	}
}

// TestReconfigureRefused: an invalid configuration changes nothing and
// names every problem, the rule file's with its line.
func TestReconfigureRefused(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	writeFile(t, rules, "deny 127.0.22.0/24\n")
	cfg := testConfig()
	cfg.RuleFiles = []string{rules}
	h := newHarness(t, cfg, Options{})

	bad := testConfig()
	bad.RuleFiles = []string{rules}
	bad.Limits.PerIPConns = 0
	bad.Thresholds.SetCount("auth_failure", 0)
	if err := h.s.Reconfigure(bad); err == nil {
		t.Fatal("invalid config accepted")
	} else {
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) != 2 ||
			!strings.Contains(err.Error(), "limits.per_ip_conns: must be > 0") ||
			!strings.Contains(err.Error(), "thresholds.auth_failure.count: must be > 0") {
			t.Fatalf("error: %v", err)
		}
	}
	writeFile(t, filepath.Join(dir, "rules2"), "deny 127.0.23.0/24\nallow nonsense\n")
	bad = testConfig()
	bad.RuleFiles = []string{filepath.Join(dir, "rules2")}
	err := h.s.Reconfigure(bad)
	if err == nil || !strings.Contains(err.Error(), "rules2:2:") {
		t.Fatalf("bad rule file: %v, want rules2:2", err)
	}
	// The old settings hold.
	if h.s.cfg().Limits.PerIPConns != cfg.Limits.PerIPConns {
		t.Fatal("per_ip_conns changed by a refused config")
	}
	if d := h.s.Decide(mustAddr("127.0.22.5"), ""); d.Action == Allow {
		t.Fatal("old rule file no longer in force")
	}
	if d := h.s.Decide(mustAddr("127.0.23.5"), ""); d.Action != Allow {
		t.Fatal("refused rule file in force")
	}
	if !strings.Contains(h.logs.String(), "rules2:2:") {
		t.Fatalf("log does not name the bad line:\n%s", h.logs)
	}
}

// TestReconfigureCapacityAndRules: a new max_conns and new inline rules
// apply to a listener opened before.
func TestReconfigureCapacityAndRules(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	startServer(t, h.s, ListenerConfig{Name: "t", Reject: replyReject})
	cfg := testConfig()
	cfg.Limits.MaxConns = 7
	cfg.Rules = []string{"deny 127.0.24.0/24 drop"}
	if err := h.s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if l := h.s.listenerByName("t"); l.ceiling(true) != 7 {
		t.Fatalf("ceiling %d, want 7", l.ceiling(true))
	}
	if d := h.s.Decide(mustAddr("127.0.24.1"), "t"); d.Action != Drop {
		t.Fatalf("new inline rule: %+v", d)
	}
}

// TestLockdownSurvivesRestart: lockdown set at run time is still on after
// the shield is closed and opened again on the same state folder, and off
// again once turned off.
func TestLockdownSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *Shield {
		s, err := New(testConfig(), Options{StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	s.SetLockdown(true)
	s.Close()
	s = open()
	if !s.Lockdown() {
		t.Fatal("lockdown lost by a restart")
	}
	s.SetLockdown(false)
	s.Close()
	s = open()
	defer s.Close()
	if s.Lockdown() {
		t.Fatal("lockdown turned off, back on after a restart")
	}
}
