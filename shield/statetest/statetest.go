// Package statetest is the conformance suite of shield.StateStore. Every
// implementation runs it from its own tests: the default LocalStore does
// (statetest_test.go here), and so must a shared store (Redis, issue 16):
//
//	func TestConformance(t *testing.T) {
//		statetest.Run(t, func(t *testing.T) statetest.Open {
//			db := freshDatabase(t) // empty state for this subtest
//			return func(t *testing.T) shield.StateStore { return dial(t, db) }
//		})
//	}
//
// It checks what shield.StateStore documents: records round-trip, replace
// per key and expire by themselves; known-good revocation covers a prefix;
// the issuing node of a ban is kept; shared counters add up across
// handles, slide over their window and cross their limit exactly once;
// changes reach the other handles' Watch and are never echoed to the
// writer; Watch stops; bans are durable once every handle is closed; and
// concurrent writers lose nothing. Waiting for a change is bounded and never
// relies on timing; record times are an hour away from now, so a slow
// machine cannot expire them.
package statetest

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
)

// Open opens another handle (another node) on the state its Run subtest
// made. The suite closes the handles it opens. After every handle is
// closed, a new one must find the durable state again.
type Open func(t *testing.T) shield.StateStore

// deliveryDeadline bounds the wait for a change to reach another handle.
const deliveryDeadline = 10 * time.Second

// Run runs the suite. newState makes a fresh, empty state for each subtest
// and returns how to open handles on it.
func Run(t *testing.T, newState func(t *testing.T) Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"Bans", testBans},
		{"Expiry", testExpiry},
		{"Offenders", testOffenders},
		{"KnownGood", testKnownGood},
		{"Lockdown", testLockdown},
		{"Load", testLoad},
		{"Watch", testWatch},
		{"WatchStop", testWatchStop},
		{"Durable", testDurable},
		{"Concurrent", testConcurrent},
		{"BanLog", testBanLog},
		{"Counts", testCounts},
		{"CountsWindow", testCountsWindow},
		{"CountsConcurrent", testCountsConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newState(t)) })
	}
}

var ctx = context.Background()

func handle(t *testing.T, open Open) shield.StateStore {
	t.Helper()
	st := open(t)
	t.Cleanup(func() { st.Close() })
	return st
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// now is the base of every record time: whole seconds, UTC, so a store
// that keeps second or millisecond precision compares equal.
func now() time.Time { return time.Now().UTC().Truncate(time.Second) }

func ban(p string, base time.Time, count int) shield.BanRecord {
	return shield.BanRecord{Prefix: netip.MustParsePrefix(p), Reason: "auth_failure", Action: shield.Reject,
		Created: base, Expires: base.Add(time.Hour), Count: count}
}

func sameBan(a, b shield.BanRecord) bool {
	return a.Prefix == b.Prefix && a.Reason == b.Reason && a.Action == b.Action && a.Manual == b.Manual &&
		a.Temporary == b.Temporary && a.Created.Equal(b.Created) && a.Expires.Equal(b.Expires) && a.Count == b.Count &&
		a.Node == b.Node
}

func findBan(bans []shield.BanRecord, p string) (shield.BanRecord, bool) {
	for _, b := range bans {
		if b.Prefix == netip.MustParsePrefix(p) {
			return b, true
		}
	}
	return shield.BanRecord{}, false
}

func testBans(t *testing.T, open Open) {
	st := handle(t, open)
	base := now()
	v4, v6 := ban("192.0.2.7/32", base, 1), ban("2001:db8::/48", base, 3)
	v6.Manual, v6.Reason, v6.Action, v6.Temporary, v6.Node = true, "scanner", shield.Drop, true, "node2"
	must(t, st.PutBan(ctx, v4))
	must(t, st.PutBan(ctx, v6))
	bans, err := st.Bans(ctx)
	must(t, err)
	if len(bans) != 2 {
		t.Fatalf("Bans: %+v", bans)
	}
	for _, want := range []shield.BanRecord{v4, v6} {
		if got, ok := findBan(bans, want.Prefix.String()); !ok || !sameBan(got, want) {
			t.Errorf("ban %s: got %+v, want %+v", want.Prefix, got, want)
		}
	}
	// Last writer wins on exactly one prefix.
	v4b := ban("192.0.2.7/32", base, 2)
	must(t, st.PutBan(ctx, v4b))
	bans, _ = st.Bans(ctx)
	if got, _ := findBan(bans, "192.0.2.7/32"); len(bans) != 2 || !sameBan(got, v4b) {
		t.Fatalf("replace: %+v", bans)
	}
	must(t, st.DeleteBan(ctx, v4.Prefix))
	must(t, st.DeleteBan(ctx, netip.MustParsePrefix("198.51.100.0/24"))) // none: no error
	bans, _ = st.Bans(ctx)
	if _, ok := findBan(bans, "192.0.2.7/32"); ok || len(bans) != 1 {
		t.Fatalf("after DeleteBan: %+v", bans)
	}
}

func testExpiry(t *testing.T, open Open) {
	st := handle(t, open)
	past := now().Add(-2 * time.Hour) // expired an hour ago
	must(t, st.PutBan(ctx, ban("192.0.2.8/32", past, 1)))
	must(t, st.PutOffender(ctx, shield.OffenderRecord{Prefix: netip.MustParsePrefix("192.0.2.8/32"), Count: 1, Last: past, Expires: past.Add(time.Hour)}))
	must(t, st.MarkKnownGood(ctx, netip.MustParseAddr("192.0.2.9"), past))
	if bans, _ := st.Bans(ctx); len(bans) != 0 {
		t.Errorf("expired ban listed: %+v", bans)
	}
	if o, ok, _ := st.Offender(ctx, netip.MustParsePrefix("192.0.2.8/32")); ok {
		t.Errorf("expired offender found: %+v", o)
	}
	if _, ok, _ := st.KnownGood(ctx, netip.MustParseAddr("192.0.2.9")); ok {
		t.Error("expired known-good found")
	}
	s, err := st.Load(ctx)
	must(t, err)
	if len(s.Bans)+len(s.Offenders)+len(s.KnownGood) != 0 {
		t.Errorf("Load returned expired records: %+v", s)
	}
}

func testOffenders(t *testing.T, open Open) {
	st := handle(t, open)
	base := now()
	p := netip.MustParsePrefix("198.51.100.0/24")
	o := shield.OffenderRecord{Prefix: p, Count: 2, Last: base, Expires: base.Add(time.Hour)}
	must(t, st.PutOffender(ctx, o))
	got, ok, err := st.Offender(ctx, p)
	must(t, err)
	if !ok || got.Count != 2 || !got.Last.Equal(base) || !got.Expires.Equal(o.Expires) {
		t.Fatalf("Offender: %+v %v", got, ok)
	}
	o.Count = 3
	must(t, st.PutOffender(ctx, o))
	if got, _, _ := st.Offender(ctx, p); got.Count != 3 {
		t.Fatalf("replace: %+v", got)
	}
	if _, ok, _ := st.Offender(ctx, netip.MustParsePrefix("198.51.100.1/32")); ok {
		t.Fatal("an address inside an offending prefix is not that offender")
	}
}

func testKnownGood(t *testing.T, open Open) {
	st := handle(t, open)
	until := now().Add(time.Hour)
	in, in6, out := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.3.10")
	one := netip.MustParseAddr("192.0.3.11") // revoked alone, next to out
	for _, a := range []netip.Addr{in, in6, out, one} {
		must(t, st.MarkKnownGood(ctx, a, until))
	}
	if u, ok, err := st.KnownGood(ctx, in); err != nil || !ok || !u.Equal(until) {
		t.Fatalf("KnownGood: %v %v %v", u, ok, err)
	}
	must(t, st.RevokeKnownGood(ctx, netip.MustParsePrefix("192.0.2.0/24")))
	must(t, st.RevokeKnownGood(ctx, netip.MustParsePrefix("2001:db8::10/128")))
	must(t, st.RevokeKnownGood(ctx, netip.PrefixFrom(one, 32)))
	if _, ok, _ := st.KnownGood(ctx, one); ok {
		t.Error("revoked by /32, still known-good")
	}
	if _, ok, _ := st.KnownGood(ctx, in); ok {
		t.Error("revoked by prefix, still known-good")
	}
	if _, ok, _ := st.KnownGood(ctx, in6); ok {
		t.Error("revoked by /128, still known-good")
	}
	if _, ok, _ := st.KnownGood(ctx, out); !ok {
		t.Error("outside the revoked prefix, lost")
	}
}

func testLockdown(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	if on, err := a.Lockdown(ctx); err != nil || on {
		t.Fatalf("fresh state in lockdown: %v %v", on, err)
	}
	must(t, a.SetLockdown(ctx, true))
	if on, _ := b.Lockdown(ctx); !on {
		t.Fatal("lockdown not shared")
	}
	must(t, b.SetLockdown(ctx, false))
	if on, _ := a.Lockdown(ctx); on {
		t.Fatal("lockdown off not shared")
	}
}

func testLoad(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	base := now()
	must(t, a.PutBan(ctx, ban("192.0.2.11/32", base, 1)))
	must(t, a.PutOffender(ctx, shield.OffenderRecord{Prefix: netip.MustParsePrefix("192.0.2.11/32"), Count: 1, Last: base, Expires: base.Add(time.Hour)}))
	must(t, a.MarkKnownGood(ctx, netip.MustParseAddr("192.0.2.12"), base.Add(time.Hour)))
	must(t, a.SetLockdown(ctx, true))
	s, err := b.Load(ctx) // another node sees it all
	must(t, err)
	if len(s.Bans) != 1 || len(s.Offenders) != 1 || len(s.KnownGood) != 1 || !s.Lockdown {
		t.Fatalf("Load: %+v", s)
	}
	if s.KnownGood[0].Addr != netip.MustParseAddr("192.0.2.12") || s.Offenders[0].Count != 1 {
		t.Fatalf("Load records: %+v", s)
	}
}

// recorder collects changes for a bounded wait.
type recorder struct {
	mu sync.Mutex
	cs []shield.Change
	ch chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1)} }

func (r *recorder) add(c shield.Change) {
	r.mu.Lock()
	r.cs = append(r.cs, c)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *recorder) changes() []shield.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]shield.Change(nil), r.cs...)
}

// waitFor waits until match has seen a change, within deliveryDeadline.
func (r *recorder) waitFor(t *testing.T, what string, match func(shield.Change) bool) shield.Change {
	t.Helper()
	deadline := time.After(deliveryDeadline)
	for {
		for _, c := range r.changes() {
			if match(c) {
				return c
			}
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("%s not delivered; got %+v", what, r.changes())
		}
	}
}

func testWatch(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	ra, rb := newRecorder(), newRecorder()
	stopA, stopB := a.Watch(ra.add), b.Watch(rb.add)
	defer stopA()
	defer stopB()
	base := now()
	pfx := netip.MustParsePrefix("203.0.113.0/24")
	addr := netip.MustParseAddr("203.0.113.5")
	bn := ban("203.0.113.0/24", base, 2)
	off := shield.OffenderRecord{Prefix: pfx, Count: 2, Last: base, Expires: base.Add(time.Hour)}
	must(t, a.PutBan(ctx, bn))
	must(t, a.PutOffender(ctx, off))
	must(t, a.MarkKnownGood(ctx, addr, base.Add(time.Hour)))
	must(t, a.RevokeKnownGood(ctx, pfx))
	must(t, a.SetLockdown(ctx, true))
	must(t, a.DeleteBan(ctx, pfx))
	must(t, a.AddAccountFailure(ctx, "alice@example.org", base))
	checks := []struct {
		what  string
		match func(shield.Change) bool
	}{
		{"ban", func(c shield.Change) bool { return c.Kind == shield.ChangeBan && sameBan(c.Ban, bn) }},
		{"offender", func(c shield.Change) bool {
			return c.Kind == shield.ChangeOffender && c.Offender.Prefix == pfx && c.Offender.Count == 2
		}},
		{"known-good", func(c shield.Change) bool {
			return c.Kind == shield.ChangeKnownGood && c.Addr == addr && c.Until.Equal(base.Add(time.Hour))
		}},
		{"revoke", func(c shield.Change) bool { return c.Kind == shield.ChangeRevokeKnownGood && c.Prefix == pfx }},
		{"lockdown", func(c shield.Change) bool { return c.Kind == shield.ChangeLockdown && c.Lockdown }},
		{"unban", func(c shield.Change) bool { return c.Kind == shield.ChangeUnban && c.Prefix == pfx }},
		{"account failure", func(c shield.Change) bool {
			return c.Kind == shield.ChangeAccountFailure && c.Account == "alice@example.org" && c.At.Equal(base)
		}},
	}
	for _, c := range checks {
		rb.waitFor(t, c.what, c.match)
	}
	// Order per writer: the ban came before its unban.
	iBan, iUnban := -1, -1
	for i, c := range rb.changes() {
		if c.Kind == shield.ChangeBan && iBan < 0 {
			iBan = i
		}
		if c.Kind == shield.ChangeUnban {
			iUnban = i
		}
	}
	if iBan > iUnban {
		t.Errorf("unban delivered before ban: %+v", rb.changes())
	}
	// The writer hears others, never itself: a marker from b reaches a,
	// and by then a has seen none of its own changes.
	marker := ban("198.51.100.99/32", base, 1)
	must(t, b.PutBan(ctx, marker))
	ra.waitFor(t, "marker", func(c shield.Change) bool { return c.Kind == shield.ChangeBan && sameBan(c.Ban, marker) })
	for _, c := range ra.changes() {
		if c.Kind != shield.ChangeResync && !(c.Kind == shield.ChangeBan && sameBan(c.Ban, marker)) {
			t.Errorf("writer got its own change back: %+v", c)
		}
	}
}

func testWatchStop(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	stopped, live := newRecorder(), newRecorder()
	stop := b.Watch(stopped.add)
	stopLive := b.Watch(live.add)
	defer stopLive()
	stop()
	base := now()
	must(t, a.PutBan(ctx, ban("192.0.2.13/32", base, 1)))
	// The live watcher of the same handle hears it: so would the stopped one, had it not stopped.
	live.waitFor(t, "ban", func(c shield.Change) bool { return c.Kind == shield.ChangeBan })
	if cs := stopped.changes(); len(cs) != 0 {
		t.Fatalf("stopped watcher called: %+v", cs)
	}
}

func testDurable(t *testing.T, open Open) {
	a := open(t)
	base := now()
	bn := ban("192.0.2.14/32", base, 4)
	bn.Manual, bn.Action = true, shield.Tarpit
	must(t, a.PutBan(ctx, bn))
	must(t, a.Flush(ctx))
	must(t, a.Close())
	b := handle(t, open)
	bans, err := b.Bans(ctx)
	must(t, err)
	if got, ok := findBan(bans, "192.0.2.14/32"); !ok || !sameBan(got, bn) {
		t.Fatalf("ban lost across reopen: %+v", bans)
	}
}

func testConcurrent(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	base := now()
	var wg sync.WaitGroup
	for w, st := range []shield.StateStore{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if err := st.PutBan(ctx, ban(fmt.Sprintf("10.%d.%d.1/32", w, i), base, 1)); err != nil {
					t.Error(err)
				}
				if err := st.MarkKnownGood(ctx, netip.AddrFrom4([4]byte{10, 100, byte(w), byte(i)}), base.Add(time.Hour)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	s, err := a.Load(ctx)
	must(t, err)
	if len(s.Bans) != 100 || len(s.KnownGood) != 100 {
		t.Fatalf("concurrent writers lost records: %d bans, %d known-good", len(s.Bans), len(s.KnownGood))
	}
}

// counts calls AddCounts and fails the test on error.
func counts(t *testing.T, st shield.StateStore, at time.Time, cs ...shield.Count) []shield.CountTotal {
	t.Helper()
	out, err := st.AddCounts(ctx, at, cs)
	must(t, err)
	if len(out) != len(cs) {
		t.Fatalf("AddCounts returned %d totals for %d counts", len(out), len(cs))
	}
	return out
}

// windowStart is the start of the hour-long counter window holding now,
// so the tests choose where in a window they count.
func windowStart() time.Time {
	k, _ := shield.CounterWindow(time.Now(), time.Hour)
	return time.UnixMilli(k * time.Hour.Milliseconds()).UTC()
}

func testCounts(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	at := windowStart().Add(time.Minute)
	p1, p2 := netip.MustParsePrefix("192.0.2.20/32"), netip.MustParsePrefix("192.0.2.0/24")
	c := func(name string, p netip.Prefix, add int64) shield.Count {
		return shield.Count{Name: name, Subject: p, Window: time.Hour, Limit: 10, Add: add}
	}
	// Two nodes' events add up; subjects and names are separate counters;
	// totals come back in the order asked.
	got := counts(t, a, at, c("auth_failure", p1, 3), c("network_auth_failure", p2, 5))
	if got[0] != (shield.CountTotal{Total: 3}) || got[1] != (shield.CountTotal{Total: 5}) {
		t.Fatalf("first batch: %+v", got)
	}
	if got := counts(t, b, at, c("auth_failure", p1, 4)); got[0] != (shield.CountTotal{Total: 7}) {
		t.Fatalf("second node: %+v", got)
	}
	if got := counts(t, a, at, c("auth_failure", p1, 0), c("protocol_error", p1, 0)); got[0].Total != 7 || got[1].Total != 0 {
		t.Fatalf("read back: %+v", got)
	}
	// Reaching the limit crosses once, for the caller that reached it, and
	// starts the counter again.
	if got := counts(t, b, at, c("auth_failure", p1, 3)); got[0] != (shield.CountTotal{Total: 10, Crossed: true}) {
		t.Fatalf("limit reached: %+v", got)
	}
	if got := counts(t, a, at, c("auth_failure", p1, 1)); got[0] != (shield.CountTotal{Total: 1}) {
		t.Fatalf("after crossing: %+v", got)
	}
	// The network counter reaches its limit too.
	if got := counts(t, a, at, c("network_auth_failure", p2, 5)); !got[0].Crossed {
		t.Fatalf("network counter at its limit: %+v", got)
	}
	// Reset forgets the counter before adding.
	r := c("auth_failure", p1, 2)
	r.Reset = true
	if got := counts(t, b, at, r); got[0] != (shield.CountTotal{Total: 2}) {
		t.Fatalf("reset: %+v", got)
	}
	// A count without a limit never crosses.
	n := c("unknown_recipient", p1, 50)
	n.Limit = 0
	if got := counts(t, a, at, n); got[0] != (shield.CountTotal{Total: 50}) {
		t.Fatalf("no limit: %+v", got)
	}
	// A call that adds nothing reads, and never crosses.
	n.Add, n.Limit = 0, 10
	if got := counts(t, b, at, n); got[0] != (shield.CountTotal{Total: 50}) {
		t.Fatalf("read over the limit: %+v", got)
	}
}

func testCountsWindow(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	start := windowStart()
	p := netip.MustParsePrefix("2001:db8::20/128")
	c := shield.Count{Name: "auth_failure", Subject: p, Window: time.Hour, Add: 8}
	counts(t, a, start.Add(50*time.Minute), c)
	// A quarter into the next window, three quarters of the previous
	// window's 8 events are still inside the sliding window: 1 + 6.
	c.Add = 1
	if got := counts(t, b, start.Add(time.Hour+15*time.Minute), c); got[0].Total != 7 {
		t.Fatalf("sliding total: %+v, want 7", got)
	}
	// Two windows on, the 8 are gone and the 1 weighs floor(3/4) = 0.
	c.Add = 0
	if got := counts(t, a, start.Add(2*time.Hour+15*time.Minute), c); got[0].Total != 0 {
		t.Fatalf("two windows later: %+v, want 0", got)
	}
}

func testCountsConcurrent(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	at := windowStart().Add(time.Minute)
	c := shield.Count{Name: "auth_failure", Subject: netip.MustParsePrefix("192.0.2.21/32"), Window: time.Hour, Limit: 10, Add: 1}
	var crossed sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for _, st := range []shield.StateStore{a, b, a, b} {
		crossed.Add(1)
		go func() {
			defer crossed.Done()
			for range 25 {
				out, err := st.AddCounts(ctx, at, []shield.Count{c})
				if err != nil {
					t.Error(err)
					return
				}
				if out[0].Crossed {
					mu.Lock()
					n++
					mu.Unlock()
				}
			}
		}()
	}
	crossed.Wait()
	// 100 events, limit 10: every crossing restarts the counter, so
	// exactly 10 callers were told to ban.
	if n != 10 {
		t.Fatalf("%d crossings for 100 events at limit 10, want 10", n)
	}
}

func testBanLog(t *testing.T, open Open) {
	a, b := handle(t, open), handle(t, open)
	base := now()
	bn := ban("192.0.2.30/32", base, 2)
	bn.Node = "node1"
	must(t, a.PutBan(ctx, bn))
	must(t, b.DeleteBan(ctx, bn.Prefix))
	must(t, b.DeleteBan(ctx, netip.MustParsePrefix("192.0.2.31/32"))) // no such ban: not logged
	log, err := a.BanLog(ctx, base.Add(-time.Minute))
	must(t, err)
	if len(log) != 2 {
		t.Fatalf("ban log: %+v", log)
	}
	got := log[0]
	if got.Kind != "ban" || got.Prefix != bn.Prefix || got.Reason != bn.Reason || got.Node != "node1" ||
		!got.Time.Equal(base) || got.TTL != time.Hour || got.Count != 2 || got.Action != bn.Action {
		t.Errorf("logged ban: %+v", got)
	}
	if u := log[1]; u.Kind != "unban" || u.Prefix != bn.Prefix || u.Reason != bn.Reason || u.Time.Before(base) {
		t.Errorf("logged unban: %+v", u)
	}
	later, err := b.BanLog(ctx, time.Now().Add(time.Hour))
	must(t, err)
	if len(later) != 0 {
		t.Errorf("ban log since a later time: %+v", later)
	}
}
