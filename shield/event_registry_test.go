package shield

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// A behaviour a service defines for itself: counted per address and per
// network, with its own ban duration and no escalation.
var spfFail = MustRegister(Behaviour{Name: "test_spf_fail",
	Threshold: Threshold{Count: 3, Window: time.Minute},
	Network:   Threshold{Count: 5, Window: time.Minute},
	Reason:    "too many forged senders", NetworkReason: "too many forged senders from your network",
	BanTTL: time.Hour, NoEscalation: true})

func TestRegisterRejectsBadBehaviours(t *testing.T) {
	for _, b := range []Behaviour{
		{Name: ""},
		{Name: "Has-Caps"},
		{Name: "network_flood"},
		{Name: "auth_failure"}, // registered by the shield
		{Name: "test_no_window", Threshold: Threshold{Count: 1}},
		{Name: "test_bad_ttl", BanTTL: -time.Second},
		{Name: "test_bad_reset", Resets: Event(250)},
	} {
		if _, err := Register(b); err == nil {
			t.Errorf("Register(%+v) accepted", b)
		}
	}
	if ev, ok := LookupEvent("test_spf_fail"); !ok || ev != spfFail || ev.String() != "test_spf_fail" {
		t.Fatalf("LookupEvent: %v %v", ev, ok)
	}
	if _, ok := LookupEvent("nope"); ok {
		t.Fatal("LookupEvent found an unregistered name")
	}
}

// TestServiceBehaviour: a registered behaviour bans per address at its own
// threshold, with its own reason and TTL, never escalating; and per
// network once addresses spread the flood.
func TestServiceBehaviour(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	addr := mustAddr("192.0.2.200")
	for range 2 {
		if d := h.s.report(nil, addr, spfFail, h.clock.Now()); d.Action != Allow {
			t.Fatalf("banned early: %+v", d)
		}
	}
	d := h.s.report(nil, addr, spfFail, h.clock.Now())
	want := Decision{Action: Reject, Reason: "too many forged senders", Source: "ban:test_spf_fail"}
	if d != want {
		t.Fatalf("got %+v, want %+v", d, want)
	}
	if b := h.s.Bans(); len(b) != 1 || b[0].Expires.Sub(b[0].Created) != time.Hour {
		t.Fatalf("bans %+v", b)
	}
	// Second offence: still one hour (NoEscalation), count 2.
	h.clock.Advance(time.Hour + time.Second)
	h.s.expireBans(h.clock.Now())
	for range 3 {
		h.s.report(nil, addr, spfFail, h.clock.Now())
	}
	if b := h.s.Bans(); len(b) != 1 || b[0].Expires.Sub(b[0].Created) != time.Hour || b[0].Count != 2 {
		t.Fatalf("bans after repeat %+v", b)
	}

	// Five addresses of 198.51.100.0/24, two reports each: the network
	// count (5) bans the /24 before any address reaches 3.
	var last Decision
	for i := range 5 {
		a := mustAddr(fmt.Sprintf("198.51.100.%d", i+1))
		h.s.report(nil, a, spfFail, h.clock.Now())
		last = h.s.report(nil, a, spfFail, h.clock.Now())
		if last.Action != Allow {
			break
		}
	}
	want = Decision{Action: Reject, Reason: "too many forged senders from your network", Source: "ban:network_test_spf_fail"}
	if last != want {
		t.Fatalf("network ban: got %+v, want %+v", last, want)
	}
	if d := h.s.Decide(mustAddr("198.51.100.77"), ""); d != want {
		t.Fatalf("Decide in the banned network: %+v", d)
	}
}

// TestThresholdsTOMLMerge: a [thresholds.<name>] table changes only the
// keys it gives; unknown names and keys are reported.
func TestThresholdsTOMLMerge(t *testing.T) {
	var wrap struct {
		Shield Config `toml:"shield"`
	}
	wrap.Shield = DefaultConfig()
	_, err := toml.Decode("[shield.thresholds.auth_failure]\ncount = 4\n[shield.thresholds.network_test_spf_fail]\ndry_run = true\n", &wrap)
	if err != nil {
		t.Fatal(err)
	}
	th := wrap.Shield.Thresholds
	if th["auth_failure"] != (Threshold{Count: 4, Window: 10 * time.Minute}) ||
		th["network_test_spf_fail"] != (Threshold{Count: 5, Window: time.Minute, DryRun: true}) {
		t.Fatalf("merged %+v", th)
	}
	if errs := wrap.Shield.Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
	if _, err := toml.Decode("[shield.thresholds.auth_failure]\ncuont = 4\n[shield.thresholds.pregreet]\ncount = \"x\"\n", &wrap); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprint(wrap.Shield.Validate())
	if !strings.Contains(text, "thresholds.auth_failure.cuont: unknown key") || !strings.Contains(text, `thresholds.pregreet.count: wrong type: want a number, got "x" (a string)`) {
		t.Fatalf("bad keys not reported: %s", text)
	}
	cfg := DefaultConfig()
	cfg.Thresholds["auth_failur"] = Threshold{Count: 1, Window: time.Minute}
	cfg.Thresholds["network_nothing"] = Threshold{Count: 1, Window: time.Minute}
	text = fmt.Sprint(cfg.Validate())
	if !strings.Contains(text, "thresholds.auth_failur: no such behaviour") || !strings.Contains(text, "thresholds.network_nothing: no such behaviour") {
		t.Fatal(text)
	}
}

// TestHistoryReadsLegacyAndUnknownEvents: a history written before events
// had names (counts by number) and one naming a behaviour this process
// never registered both keep their counts.
func TestHistoryReadsLegacyAndUnknownEvents(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	m, ns := now.Unix()/60, now.UnixNano()
	lines := fmt.Sprintf(`{"k":"r","a":"192.0.2.1/32","m":%d,"f":%d,"l":%d,"e":[0,3,0,2]}
{"k":"r","a":"192.0.2.2/32","m":%d,"f":%d,"l":%d,"en":{"test_from_elsewhere":4}}
{"k":"t","m":%d,"e":[0,3,0,2],"en":{"test_from_elsewhere":4}}
`, m, ns, ns, m, ns, ns, m)
	if err := os.WriteFile(filepath.Join(dir, historyFile), []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := ReadHistory(dir, testConfig(), now.Add(-time.Minute), time.Minute, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Addrs) != 2 {
		t.Fatalf("addrs %+v", snap.Addrs)
	}
	a, b := snap.Addrs[0], snap.Addrs[1]
	if a.Events["auth_failure"] != 3 || a.Events["unknown_recipient"] != 2 || b.Events["test_from_elsewhere"] != 4 || !b.Offending() {
		t.Fatalf("events %+v / %+v", a.Events, b.Events)
	}
	var total uint64
	for _, p := range snap.Timeline {
		total += p.Events["auth_failure"] + p.Events["test_from_elsewhere"]
	}
	if total != 7 {
		t.Fatalf("timeline %+v", snap.Timeline)
	}
	if _, ok := LookupEvent("test_from_elsewhere"); ok {
		t.Fatal("a name read from a file counts as registered")
	}
}

// TestREADMEBehaviourExampleCompiles: the README's example of a service's
// own behaviour is the code of example_test.go, which the compiler checks.
func TestREADMEBehaviourExampleCompiles(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	ex, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```go\n// SPFFail")
	block, _, _ = strings.Cut(block, "```")
	if !ok || !strings.Contains(string(ex), "// SPFFail"+block) {
		t.Fatalf("README's behaviour example is not in example_test.go:\n%s", block)
	}
}
