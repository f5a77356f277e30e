package shield

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRuleLine(t *testing.T) {
	tests := []struct {
		line    string
		prefix  string
		allow   bool
		action  Action // when set
		dryRun  bool
		empty   bool
		wantErr string
	}{
		{line: "deny 203.0.113.7", prefix: "203.0.113.7/32"},
		{line: "deny 198.51.100.0/24 drop", prefix: "198.51.100.0/24", action: Drop},
		{line: "allow 192.0.2.10", prefix: "192.0.2.10/32", allow: true},
		{line: "deny 2001:db8::/32 tarpit dry-run", prefix: "2001:db8::/32", action: Tarpit, dryRun: true},
		{line: "203.0.113.9", prefix: "203.0.113.9/32"},
		{line: "203.0.113.9 # noisy scanner", prefix: "203.0.113.9/32"},
		{line: "  DENY\t198.51.100.7/24   REJECT ", prefix: "198.51.100.0/24", action: Reject},
		{line: "deny ::ffff:192.0.2.1", prefix: "192.0.2.1/32"},
		{line: "deny ::ffff:192.0.2.0/120", prefix: "192.0.2.0/24"},
		{line: "", empty: true},
		{line: "   # only a comment", empty: true},
		{line: "deny", wantErr: "needs an address"},
		{line: "deny 300.1.2.3", wantErr: "bad address"},
		{line: "deny 10.0.0.0/33", wantErr: "bad CIDR"},
		{line: "allow 10.0.0.1 drop", wantErr: "allow takes no action"},
		{line: "allow 10.0.0.1 dry-run", wantErr: "cannot be dry-run"},
		{line: "deny 10.0.0.1 drop tarpit", wantErr: "second action"},
		{line: "deny 10.0.0.1 explode", wantErr: "unknown word"},
		{line: "deny 10.0.0.1 drop dry-run dry-run", wantErr: "twice"},
		{line: "deny fe80::1%eth0", wantErr: "zones"},
		{line: "permit 10.0.0.1", wantErr: "bad address"},
	}
	for _, tt := range tests {
		pl, err := parseRuleLine(tt.line)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want %q", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.line, err)
			continue
		}
		if pl.empty != tt.empty {
			t.Errorf("%q: empty %v", tt.line, pl.empty)
			continue
		}
		if tt.empty {
			continue
		}
		if pl.prefix.String() != tt.prefix || pl.allow != tt.allow || pl.dryRun != tt.dryRun {
			t.Errorf("%q: got %v allow=%v dry=%v", tt.line, pl.prefix, pl.allow, pl.dryRun)
		}
		if tt.action != Allow && (!pl.actionSet || pl.action != tt.action) {
			t.Errorf("%q: action %v set=%v, want %v", tt.line, pl.action, pl.actionSet, tt.action)
		}
	}
}

func TestLongestPrefixWins(t *testing.T) {
	cfg := testConfig()
	cfg.DefaultAction = Drop
	cfg.Rules = []string{
		"deny 192.0.2.0/24",
		"allow 192.0.2.10",
		"deny 2001:db8::/32 tarpit",
		"allow 2001:db8:1::/48",
		"deny 2001:db8:1:2::/64 reject",
	}
	h := newHarness(t, cfg, Options{})
	tests := []struct {
		addr   string
		action Action
		source string
	}{
		{"192.0.2.9", Drop, "config:rules[0]"},
		{"192.0.2.10", Allow, ""},
		{"::ffff:192.0.2.9", Drop, "config:rules[0]"},
		{"2001:db8::5", Tarpit, "config:rules[2]"},
		{"2001:db8:1::5", Allow, ""},
		{"2001:db8:1:2::5", Reject, "config:rules[4]"},
		{"198.51.100.1", Allow, ""},
	}
	for _, tt := range tests {
		d := h.s.Decide(mustAddr(tt.addr), "")
		if d.Action != tt.action || d.Source != tt.source {
			t.Errorf("%s: %+v, want %v from %q", tt.addr, d, tt.action, tt.source)
		}
		if d.Action != Allow && (d.Temporary || d.Reason != "access denied") {
			t.Errorf("%s: a rule refusal is policy with a client-safe reason: %+v", tt.addr, d)
		}
	}
}

func TestConfigAllowWins(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 10.1.2.3"}
	cfg.Allow = []string{"10.1.2.3"}
	h := newHarness(t, cfg, Options{})
	if d := h.s.Decide(mustAddr("10.1.2.3"), ""); d.Action != Allow {
		t.Fatalf("Config.Allow must win over a rule for the same address: %+v", d)
	}
}

func TestBadRulesListEveryLine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shield.rules")
	writeFile(t, file, "deny 10.0.0.1\ndeny 10.0.0.300\n# fine\nallow 10.0.0.2 drop\nbogus words here\n")
	cfg := testConfig()
	cfg.RuleFiles = []string{file}
	_, err := New(cfg, Options{})
	var re *RulesError
	if !errors.As(err, &re) {
		t.Fatalf("want *RulesError, got %v", err)
	}
	for _, want := range []string{file + ":2:", file + ":4:", file + ":5:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if len(re.Lines) != 3 {
		t.Errorf("want 3 bad lines, got %d: %v", len(re.Lines), err)
	}
}

// TestReloadKeepsSessions edits one line of a watched rules file while a
// session is open: the edit applies to new connections without dropping
// the session of a client the edit does not concern.
func TestReloadKeepsSessions(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shield.rules") // does not exist yet: watched for creation
	cfg := testConfig()
	cfg.RuleFiles = []string{file}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})

	a := dialFrom(t, srv.addr, "127.0.2.1")
	a.expect("220")
	if r := a.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}

	writeFile(t, file, "# blocklist\ndeny 127.0.2.2 # edited in\n")
	eventually(t, "watcher applies the new rule", func() bool {
		return h.s.Decide(mustAddr("127.0.2.2"), "smtp").Action == Reject
	})
	if r := a.cmd("NOOP"); r != "250 ok" {
		t.Fatalf("session broken by reload: %q", r)
	}
	b := dialFrom(t, srv.addr, "127.0.2.2")
	if l := b.expect("554"); !strings.Contains(l, "access denied") {
		t.Fatal(l)
	}
	b.expectClosed()

	// A bad edit keeps the old rules and names file:line.
	writeFile(t, file, "deny 127.0.2.2\ndeny 127.0.2.999\n")
	err := h.s.Reload()
	if err == nil || !strings.Contains(err.Error(), file+":2:") {
		t.Fatalf("want error naming %s:2, got %v", file, err)
	}
	if d := h.s.Decide(mustAddr("127.0.2.2"), "smtp"); d.Action != Reject || d.Source != file+":2" {
		t.Fatalf("old rules must stay: %+v", d)
	}
	eventually(t, "watcher's reload failed too", func() bool { return h.s.Stats().ReloadsFailed >= 2 })
	if !strings.Contains(h.logs.String(), `msg="shield reload failed"`) {
		t.Error("no reload failed line")
	}
	if r := a.cmd("NOOP"); r != "250 ok" {
		t.Fatalf("session broken by failed reload: %q", r)
	}
	// Removing the file empties the rules.
	os.Remove(file)
	if err := h.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := h.s.Decide(mustAddr("127.0.2.2"), "smtp"); d.Action != Allow {
		t.Fatalf("missing file means no rules: %+v", d)
	}
}

func TestCloseOnDeny(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shield.rules")
	writeFile(t, file, "")
	cfg := testConfig()
	cfg.RuleFiles = []string{file}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	victim := dialFrom(t, srv.addr, "127.0.3.1")
	victim.expect("220")
	other := dialFrom(t, srv.addr, "127.0.3.2")
	other.expect("220")
	eventually(t, "both registered", func() bool { return len(h.s.Conns()) == 2 })
	writeFile(t, file, "deny 127.0.3.1\n")
	if err := h.s.Reload(); err != nil {
		t.Fatal(err)
	}
	victim.expectClosed()
	if r := other.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}
}

func FuzzParseRules(f *testing.F) {
	for _, s := range []string{"deny 203.0.113.7", "deny 198.51.100.0/24 drop", "allow 192.0.2.10",
		"deny 2001:db8::/32 tarpit dry-run", "203.0.113.9 # x", "", "#", "deny ::ffff:1.2.3.4/104"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		pl, err := parseRuleLine(line)
		if err != nil || pl.empty {
			return
		}
		if !pl.prefix.IsValid() || pl.prefix != pl.prefix.Masked() {
			t.Fatalf("%q: non-canonical prefix %v", line, pl.prefix)
		}
		if pl.prefix.Addr().Is4In6() && pl.prefix.Bits() >= 96 {
			t.Fatalf("%q: mapped prefix left mapped: %v", line, pl.prefix)
		}
		if pl.allow && (pl.actionSet || pl.dryRun) {
			t.Fatalf("%q: allow with action or dry-run", line)
		}
		// A whole file of the line must compile the same way.
		cfg := DefaultConfig()
		cfg.Rules = []string{line, line}
		if _, err := compilePolicy(&cfg); err != nil {
			t.Fatalf("%q parsed but did not compile: %v", line, err)
		}
	})
}

// TestLargeFileChunks: a file big enough to be parsed in parallel chunks
// keeps file order (a later line wins) and exact line numbers.
func TestLargeFileChunks(t *testing.T) {
	const n = 3 * parallelLines
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("deny 10.%d.%d.%d # filler", 100+i>>16, i>>8&255, i&255)
	}
	lines[0] = "deny 10.0.0.1"
	lines[4] = "deny 10.9.9.0/24 tarpit"
	lines[n/2] = "allow 10.0.0.1"
	lines[n-10] = "deny 10.9.9.0/24 drop"
	lines[n-2] = "deny 10.0.0.300"
	file := filepath.Join(t.TempDir(), "big.rules")
	writeFile(t, file, strings.Join(lines, "\n")+"\n")
	cfg := testConfig()
	cfg.RuleFiles = []string{file}
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s:%d: bad address", file, n-1)) {
		t.Fatalf("want the bad line named, got %v", err)
	}
	lines[n-2] = "# fixed"
	writeFile(t, file, strings.Join(lines, "\n")+"\n")
	h := newHarness(t, cfg, Options{})
	if d := h.s.Decide(mustAddr("10.0.0.1"), ""); d.Action != Allow {
		t.Fatalf("later allow must win: %+v", d)
	}
	if r := h.s.Why(mustAddr("10.0.0.1")).Rule; r == nil || r.Source != fmt.Sprintf("%s:%d", file, n/2+1) {
		t.Fatalf("%+v", r)
	}
	if d := h.s.Decide(mustAddr("10.9.9.9"), ""); d.Action != Drop || d.Source != fmt.Sprintf("%s:%d", file, n-9) {
		t.Fatalf("later /24 must win: %+v", d)
	}
	if d := h.s.Decide(mustAddr("10.100.1.2"), ""); d.Action != Reject || d.Source != fmt.Sprintf("%s:%d", file, 0x102+1) {
		t.Fatalf("%+v", d)
	}
	if got := h.s.Stats().Rules; got != n-3 {
		t.Fatalf("rules %d, want %d", got, n-3)
	}
}
