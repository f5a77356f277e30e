package shield

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dialAndClose opens n connections from src and closes them; refused ones
// may fail, which is fine.
func dialAndClose(t *testing.T, addr, src string, n int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	for range n {
		if c, err := d.Dial("tcp", addr); err == nil {
			c.Close()
		}
	}
}

// TestHistoryAggregatesAFlood: thousands of refused connections over three
// minutes become a handful of (address, minute) records with the right
// counts; events, bans and admissions are recorded too.
func TestHistoryAggregatesAFlood(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.0.9.0/24 drop"}
	h := newHarness(t, cfg, Options{StateDir: t.TempDir()})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	start := h.clock.Now()

	total := 0
	for minute := range 3 {
		for _, src := range []string{"127.0.9.1", "127.0.9.2"} {
			dialAndClose(t, srv.addr, src, 300)
			total += 300
		}
		eventually(t, "refusals counted", func() bool { return h.s.Stats().Listeners["smtp"].Dropped == uint64(total) })
		if minute == 1 {
			h.s.foldHistory() // a fold in the middle of a minute changes nothing
		}
		h.clock.Advance(time.Minute)
	}
	// Brute force from one address until banned, and a legitimate client.
	bad := dialFrom(t, srv.addr, "127.0.8.1")
	bad.expect("220")
	for i := range cfg.Thresholds["auth_failure"].Count {
		l := bad.cmd("AUTH bob wrong")
		if i == cfg.Thresholds["auth_failure"].Count-1 && !strings.HasPrefix(l, "554") {
			t.Fatalf("last failure: %q", l)
		}
	}
	good := dialFrom(t, srv.addr, "127.0.8.2")
	good.expect("220")
	good.cmd("AUTH alice good")
	good.cmd("MSG")

	hist := h.s.History(start)
	if len(hist) != 4 {
		t.Fatalf("want 4 addresses, got %d: %+v", len(hist), hist)
	}
	byAddr := map[string]AddrHistory{}
	for _, a := range hist {
		byAddr[whereString(a.Addr)] = a
	}
	f := byAddr["127.0.9.1"]
	if f.RefusedTotal() != 900 || len(f.Refused) != 1 || f.Refused[0].Source != "config:rules[0]" || f.Refused[0].Action != Drop {
		t.Errorf("flood address: %+v", f)
	}
	if !f.First.Equal(start) || !f.Last.Equal(start.Add(2*time.Minute)) {
		t.Errorf("first %v last %v", f.First, f.Last)
	}
	if len(f.Evidence) != 3 || !strings.Contains(f.Evidence[0], "shield denied addr=127.0.9.1 count=300 source=config:rules[0] action=drop") {
		t.Errorf("evidence %q", f.Evidence)
	}
	b := byAddr["127.0.8.1"]
	if b.Events["auth_failure"] != 10 || b.Admitted != 1 || len(b.Bans) != 1 || b.Bans[0].Reason != "auth_failure" {
		t.Errorf("brute force: %+v", b)
	}
	if last := b.Evidence[len(b.Evidence)-1]; !strings.Contains(last, "shield ban addr=127.0.8.1/32 reason=auth_failure ttl=10m0s action=reject count=1") {
		t.Errorf("ban evidence %q", b.Evidence)
	}
	g := byAddr["127.0.8.2"]
	if g.Events["auth_success"] != 1 || g.Events["message"] != 1 || g.Admitted != 1 || g.RefusedTotal() != 0 {
		t.Errorf("legit: %+v", g)
	}
	if n := h.s.hist.nrecs; n != 8 {
		t.Errorf("%d records for 1,800 refusals and 2 sessions, want 8", n)
	}

	tl := h.s.Timeline(start, time.Minute)
	if len(tl) != 4 {
		t.Fatalf("timeline %+v", tl)
	}
	for i := range 3 {
		if tl[i].Refused["drop"] != 600 || tl[i].RefusedBySource["rule"] != 600 {
			t.Errorf("minute %d: %+v", i, tl[i])
		}
	}
	if p := tl[3]; p.Admitted != 2 || p.Bans != 1 || p.Events["auth_failure"] != 10 || p.Events["message"] != 1 {
		t.Errorf("last minute: %+v", p)
	}
	if tl := h.s.Timeline(start, 2*time.Minute); len(tl) != 2 || tl[0].Refused["drop"] != 1200 {
		t.Errorf("2m steps: %+v", tl)
	}
	if h := h.s.History(start.Add(3 * time.Minute)); len(h) != 2 {
		t.Errorf("since the last minute: %d addresses", len(h))
	}
}

// TestHistoryPersists: the history survives a restart, a torn last line
// (crash during an append) is skipped, and the file is compacted at start.
func TestHistoryPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	h := newHarness(t, cfg, Options{StateDir: dir})
	start := h.clock.Now()
	for range 5 {
		h.s.report(nil, mustAddr("192.0.2.7"), ProtocolError, h.clock.Now())
	}
	h.s.agg.add(hostPrefix(mustAddr("192.0.2.8")), "shield.rules:3", Reject, false)
	h.s.foldHistory()
	h.clock.Advance(time.Minute)
	if err := h.s.Ban(mustPrefix("198.51.100.0/24"), time.Hour, "scanner", Drop); err != nil {
		t.Fatal(err)
	}
	h.s.Close()
	want := h.s.HistorySnapshot(start, time.Minute)

	// A crash in the middle of an append.
	f, err := os.OpenFile(filepath.Join(dir, historyFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"k":"d","a":"192.0.2.9/32","m":`)
	f.Close()

	h2 := newHarness(t, cfg, Options{StateDir: dir, Now: nil})
	h2.clock.Advance(time.Minute)
	got := h2.s.HistorySnapshot(start, time.Minute)
	if len(got.Addrs) != 3 || len(want.Addrs) != 3 {
		t.Fatalf("addresses: want %+v, got %+v", want.Addrs, got.Addrs)
	}
	for i := range got.Addrs {
		w, g := want.Addrs[i], got.Addrs[i]
		if w.Addr != g.Addr || w.RefusedTotal() != g.RefusedTotal() || w.Events["protocol_error"] != g.Events["protocol_error"] || len(w.Bans) != len(g.Bans) || strings.Join(w.Evidence, "\n") != strings.Join(g.Evidence, "\n") {
			t.Errorf("address %d: want %+v, got %+v", i, w, g)
		}
	}
	if got.Timeline[0].Events["protocol_error"] != 5 || got.Timeline[0].Refused["reject"] != 1 || got.Timeline[1].Bans != 1 {
		t.Errorf("timeline %+v", got.Timeline)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, historyFile)); strings.Contains(string(data), "192.0.2.9") || !strings.Contains(string(data), `"k":"r"`) {
		t.Errorf("not compacted:\n%s", data)
	}
	// Read without a Shield, as reports do when the server is stopped.
	rd, err := ReadHistory(dir, cfg, start, time.Minute, h2.clock.Now())
	if err != nil || len(rd.Addrs) != 3 || len(rd.Bans) != 1 {
		t.Errorf("ReadHistory: %v %+v", err, rd)
	}
}

// TestHistoryBounded: the oldest minutes go first when records or
// addresses run out, and nothing outlives the retention.
func TestHistoryBounded(t *testing.T) {
	cfg := testConfig()
	cfg.HistoryMaxRecords = 10
	cfg.HistoryMaxAddresses = 4
	cfg.HistoryRetention = 5 * time.Minute
	h := newHarness(t, cfg, Options{})
	start := h.clock.Now()
	addrs := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
	for range 4 {
		for _, a := range addrs {
			h.s.report(nil, mustAddr(a), UnknownRecipient, h.clock.Now())
		}
		h.s.foldHistory()
		h.clock.Advance(time.Minute)
	}
	if n := h.s.hist.nrecs; n > 10 {
		t.Fatalf("%d records", n)
	}
	// 12 records made, at most 10 kept: the first minute went.
	for _, a := range h.s.History(start) {
		if a.Events["unknown_recipient"] != 3 || !a.First.Equal(start.Add(time.Minute)) {
			t.Errorf("%+v", a)
		}
	}
	// Two new addresses in the current minute: one fits, for the other the
	// older minutes are dropped.
	h.s.report(nil, mustAddr("192.0.2.4"), PreGreet, h.clock.Now())
	h.s.report(nil, mustAddr("192.0.2.5"), PreGreet, h.clock.Now())
	h.s.foldHistory()
	if n := len(h.s.hist.addrs); n > 4 {
		t.Fatalf("%d addresses", n)
	}
	// The timeline still counts everything within the retention.
	if tl := h.s.Timeline(start, time.Hour); tl[0].Events["unknown_recipient"] != 12 || tl[0].Events["pregreet"] != 2 {
		t.Errorf("timeline %+v", tl)
	}
	h.clock.Advance(time.Hour)
	if got := h.s.History(start); len(got) != 0 {
		t.Errorf("past retention: %+v", got)
	}
	if tl := h.s.Timeline(start, time.Hour); tl[0].Events != nil {
		t.Errorf("timeline past retention %+v", tl)
	}
}

// TestLogVolumeUnderFlood: 10,000 refused connections produce a handful of
// log lines, not 10,000.
func TestLogVolumeUnderFlood(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.0.9.0/24 drop"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	const n = 10_000
	for i := range 10 {
		dialAndClose(t, srv.addr, "127.0.9."+string(rune('1'+i%9))+"0", n/10)
	}
	eventually(t, "refusals counted", func() bool { return h.s.Stats().Listeners["smtp"].Dropped == n })
	h.s.flushLogs()
	lines := strings.Count(h.logs.String(), "\n")
	t.Logf("%d refused connections, %d log lines", n, lines)
	if lines > 20 {
		t.Errorf("%d log lines for %d refused connections:\n%s", lines, n, h.logs)
	}
}

// BenchmarkHistoryCount is the history's cost on the accept path: one
// admitted connection and one event counted (no allocation for a key
// already seen this minute).
func BenchmarkHistoryCount(b *testing.B) {
	s, err := New(testConfig(), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	addr := mustAddr("192.0.2.7")
	b.ReportAllocs()
	for b.Loop() {
		s.act.admitted(addr, false)
		s.act.event(addr, AuthFailure)
	}
}

// TestHistoryCountDoesNotAllocate: counting an admission or an event for a
// key already seen this minute allocates nothing.
func TestHistoryCountDoesNotAllocate(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	addr := mustAddr("192.0.2.7")
	h.s.act.admitted(addr, true)
	if n := testing.AllocsPerRun(100, func() {
		h.s.act.admitted(addr, true)
		h.s.act.event(addr, UnknownRecipient)
	}); n != 0 {
		t.Errorf("%v allocations per count", n)
	}
}

// TestHistoryRewritesAfterWriteError: after a failed append (disk full)
// the next fold rewrites the whole file from memory.
func TestHistoryRewritesAfterWriteError(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, testConfig(), Options{StateDir: dir})
	h.s.report(nil, mustAddr("192.0.2.7"), PreGreet, h.clock.Now())
	h.s.hist.mu.Lock()
	h.s.hist.file.Close() // the next write fails
	h.s.hist.mu.Unlock()
	h.s.foldHistory()
	if !strings.Contains(h.logs.String(), "shield history save failed") {
		t.Fatalf("no error logged:\n%s", h.logs)
	}
	h.s.report(nil, mustAddr("192.0.2.8"), PreGreet, h.clock.Now())
	h.s.foldHistory()
	data, _ := os.ReadFile(filepath.Join(dir, historyFile))
	if !strings.Contains(string(data), "192.0.2.7/32") || !strings.Contains(string(data), "192.0.2.8/32") {
		t.Errorf("history file after the error:\n%s", data)
	}
}

// TestHistoryNamesABotnet: every address of a 20,000-address botnet refused
// within one log interval is in the history, while the log stays short.
func TestHistoryNamesABotnet(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	const n = 20_000
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		h.s.agg.add(hostPrefix(a), "ban:auth_failure", Drop, false)
	}
	h.s.flushLogs()
	if got := len(h.s.History(h.clock.Now().Add(-time.Minute))); got != n {
		t.Errorf("%d addresses in the history, want %d", got, n)
	}
	if lines := strings.Count(h.logs.String(), "\n"); lines > 60 {
		t.Errorf("%d log lines", lines)
	}
}

// An address's evidence tells its story in order within a minute: the
// failed logins, the ban they earned, then the connections refused for
// it. The refusals of a minute's record were stamped with the minute's
// first activity, so an abuse report read "shield denied ...
// source=ban:auth_failure" before the "shield ban" that caused it.
func TestHistoryEvidenceInOrder(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, Options{StateDir: t.TempDir()})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp", Reject: replyReject})
	start := h.clock.Now().Truncate(time.Minute)
	h.clock.Advance(start.Add(5 * time.Second).Sub(h.clock.Now())) // 5 s into a minute
	bad := dialFrom(t, srv.addr, "127.0.8.1")
	bad.expect("220")
	n := cfg.Thresholds["auth_failure"].Count
	for range n - 1 {
		bad.cmd("AUTH bob wrong")
	}
	h.clock.Advance(10 * time.Second)
	if l := bad.cmd("AUTH bob wrong"); !strings.HasPrefix(l, "554") {
		t.Fatalf("the last failure was answered %q, want the ban's 554", l)
	}
	h.clock.Advance(10 * time.Second)
	dialAndClose(t, srv.addr, "127.0.8.1", 2)
	eventually(t, "the banned client refused", func() bool { return h.s.Stats().Listeners["smtp"].Rejected == 2 })

	var ev []string
	for _, a := range h.s.History(start) {
		if a.Addr == netip.MustParsePrefix("127.0.8.1/32") {
			ev = a.Evidence
		}
	}
	var order []string
	for _, l := range ev {
		for _, what := range []string{"shield reported", "shield ban", "shield denied"} {
			if strings.Contains(l, what) {
				order = append(order, what)
			}
		}
	}
	if strings.Join(order, ", ") != "shield reported, shield ban, shield denied" {
		t.Errorf("evidence out of order:\n%s", strings.Join(ev, "\n"))
	}
}
