package shield

import (
	"context"
	"encoding/json"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestStateFilesDecode checks the hand-written state files against
// encoding/json: each file, decoded, equals what json.Marshal of the same
// records decodes to — strings with quotes, control characters and invalid
// UTF-8 in a ban reason, IPv6 and IPv4-mapped keys, many records across the
// writer's spill size, tiny and huge score parts.
func TestStateFilesDecode(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 6, 4, 30, 0, 123456789, time.UTC)
	st, err := OpenLocalStore(dir, LocalStoreOptions{Capacity: 100_000, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	reasons := []string{"brute force", `quote " back \ slash`, "ctl \x00\x01\t\n\x1f", "bad utf8 \xff\xfe end", "unicode ünï 漢 \u2028"}
	for i, r := range reasons {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
		if err := st.PutBan(ctx, BanRecord{Prefix: p, Reason: r, Action: Drop, Manual: i%2 == 0, Temporary: i%3 == 0,
			Created: now, Expires: now.Add(time.Hour), Count: i, Node: "node-" + r}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutOffender(ctx, OffenderRecord{Prefix: p, Count: i + 1, Last: now, Expires: now.Add(time.Duration(i+1) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 900 { // several of the writer's spills
		a := netip.AddrFrom4([4]byte{127, 128, byte(i >> 8), byte(i)})
		if i%3 == 0 {
			a = netip.MustParseAddr("2001:db8::").Next()
			for range i {
				a = a.Next()
			}
		}
		if err := st.MarkKnownGood(ctx, a, now.Add(time.Hour+time.Duration(i)*time.Second+time.Duration(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetLockdown(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	var got, want persisted
	readJSON(t, filepath.Join(dir, stateFile), &got)
	st.st.mu.Lock()
	snap := st.st.snapshot()
	st.st.mu.Unlock()
	want = persisted{Version: 2, Saved: now, Lockdown: snap.Lockdown}
	for _, b := range snap.Bans {
		want.Bans = append(want.Bans, persistedBan{Prefix: b.Prefix, Reason: b.Reason, Action: b.Action, Manual: b.Manual,
			Temp: b.Temporary, Created: b.Created, Expires: b.Expires, Count: b.Count, Node: b.Node})
	}
	for _, o := range snap.Offenders {
		want.Offenders = append(want.Offenders, persistedOff{Prefix: o.Prefix, Count: o.Count, Last: o.Last, Expires: o.Expires})
	}
	for _, g := range snap.KnownGood {
		want.KnownGood = append(want.KnownGood, persistedGood{Addr: g.Addr, Until: g.Until})
	}
	viaJSON(t, &want)
	if len(got.KnownGood) != 900 || len(got.Bans) != len(reasons) || len(got.Offenders) != len(reasons) || !got.Lockdown {
		t.Fatalf("state file holds %d known-good, %d bans, %d offenders, lockdown %v; want 900, %d, %d, true",
			len(got.KnownGood), len(got.Bans), len(got.Offenders), got.Lockdown, len(reasons), len(reasons))
	}
	for _, p := range []*persisted{&got, &want} { // bans come from a map: any order
		slices.SortFunc(p.Bans, func(a, b persistedBan) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	}
	sameRecords(t, "bans", got.Bans, want.Bans)
	sameRecords(t, "offenders", got.Offenders, want.Offenders)
	sameRecords(t, "known-good", got.KnownGood, want.KnownGood)
	if got.Version != want.Version || !got.Saved.Equal(want.Saved) {
		t.Fatalf("state file: version %d saved %v, want %d %v", got.Version, got.Saved, want.Version, want.Saved)
	}

	// Scores.
	h := newHarness(t, testConfig(), Options{StateDir: t.TempDir()})
	s := h.s
	ns := h.clock.Now().UnixNano()
	values := []float64{1, -2.5, 1e-9, 3e21, -123456.789e-3, math.NaN(), math.Inf(1)}
	for i := range 700 {
		a := netip.AddrFrom4([4]byte{127, 129, byte(i >> 8), byte(i)})
		if i%5 == 0 {
			a = netip.AddrFrom16(netip.AddrFrom4([4]byte{127, 130, byte(i >> 8), byte(i)}).As16()) // IPv4-mapped
		}
		s.repAddrs.do(a, true, func(r *repRec, _ bool) {
			*r = repRec{at: ns - int64(i)}
			r.parts = append(r.parts, repPart{in: repInput(AuthSuccess), v: values[i%len(values)]})
			if i%2 == 0 {
				r.parts = append(r.parts, repPart{in: inBan, v: -float64(i)}, repPart{in: inOutside, v: 0.5})
			}
		})
	}
	s.repAddrs.do(netip.MustParseAddr("127.131.0.1"), true, func(r *repRec, _ bool) { *r = repRec{at: ns} }) // no parts: not saved
	s.repNets.do(netip.MustParsePrefix("2001:db8::/48"), true, func(r *repRec, _ bool) {
		*r = repRec{at: ns, parts: []repPart{{in: repInput(AuthFailure), v: -7}}}
	})
	if err := s.saveReputation(); err != nil {
		t.Fatal(err)
	}
	var gotR, wantR savedReputation
	readJSON(t, filepath.Join(s.stateDir, reputationFile), &gotR)
	wantR = savedReputation{Version: 1, Saved: h.clock.Now()}
	finite := func(r *repRec) savedRecs {
		sr := savedRecs{At: r.at, Parts: map[string]float64{}}
		for _, p := range r.parts {
			if !math.IsNaN(p.v) && !math.IsInf(p.v, 0) {
				sr.Parts[p.in.String()] = p.v
			}
		}
		return sr
	}
	s.repAddrs.each(func(a netip.Addr, r *repRec) bool {
		if len(r.parts) > 0 {
			sr := finite(r)
			sr.Prefix = hostPrefix(a)
			wantR.Addrs = append(wantR.Addrs, sr)
		}
		return true
	})
	s.repNets.each(func(p netip.Prefix, r *repRec) bool {
		sr := finite(r)
		sr.Prefix = p
		wantR.Nets = append(wantR.Nets, sr)
		return true
	})
	viaJSON(t, &wantR)
	if len(gotR.Addrs) != 700 || len(gotR.Nets) != 1 {
		t.Fatalf("reputation file holds %d addresses and %d networks, want 700 and 1", len(gotR.Addrs), len(gotR.Nets))
	}
	sameRecords(t, "address scores", gotR.Addrs, wantR.Addrs)
	sameRecords(t, "network scores", gotR.Nets, wantR.Nets)
	if gotR.Version != wantR.Version || !gotR.Saved.Equal(wantR.Saved) {
		t.Fatalf("reputation file: version %d saved %v, want %d %v", gotR.Version, gotR.Saved, wantR.Version, wantR.Saved)
	}
}

// sameRecords fails on the first record where got and want differ.
func sameRecords[T any](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, encoding/json's %d", what, len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("%s record %d decodes to\n%+v\nencoding/json's to\n%+v", what, i, got[i], want[i])
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s does not decode: %v", path, err)
	}
}

// viaJSON replaces *v by what json.Marshal of it decodes to.
func viaJSON[T any](t *testing.T, v *T) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	*v = out
}
