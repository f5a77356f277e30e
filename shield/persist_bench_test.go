package shield

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// bigShield is a shield with a state folder whose known-good table and
// score tables hold n addresses each, as after a busy day of strangers.
func bigShield(b *testing.B, n int) (*Shield, *LocalStore) {
	b.Helper()
	s, err := New(DefaultConfig(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ls := s.store.(*LocalStore)
	now := time.Now()
	for i := range n {
		a := netip.AddrFrom4([4]byte{127, byte(128 + i>>16&0x7f), byte(i >> 8), byte(i)})
		ls.MarkKnownGood(context.Background(), a, now.Add(24*time.Hour))
		s.repAdd(a, repInput(AuthSuccess), 1, 1, now)
	}
	return s, ls
}

// BenchmarkFlushState100k and BenchmarkSaveReputation100k are the
// shield's minutely save with 100,000 known-good addresses and scores
// (issue 13). With json.Marshal of whole tables: 85 MB and 200k–600k
// allocations per file per save; written a record at a time
// (statewriter.go): 6–10 MB (the copies of the records) and ~25.
func BenchmarkFlushState100k(b *testing.B) {
	_, ls := bigShield(b, 100_000)
	b.ReportAllocs()
	for b.Loop() {
		if err := ls.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSaveReputation100k(b *testing.B) {
	s, _ := bigShield(b, 100_000)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.saveReputation(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFoldHistory80k is the minutely history fold after a minute in
// which 80,000 addresses were admitted and delivered (1,300 sessions/s
// of strangers), with the history persisted.
func BenchmarkFoldHistory80k(b *testing.B) {
	s, err := New(DefaultConfig(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i := range 80_000 {
			a := netip.AddrFrom4([4]byte{127, byte(128 + i>>16&0x7f), byte(i >> 8), byte(i)})
			s.act.admitted(a, false)
			s.act.event(a, AuthSuccess)
		}
		b.StartTimer()
		s.foldHistory()
	}
}
