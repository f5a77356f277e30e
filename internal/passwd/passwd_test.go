package passwd

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

func FuzzVerifyPassword(f *testing.F) {
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "pw")
	f.Add("$2b$04$abcdefghijklmnopqrstuu", "pw")
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$$", "")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		if strings.HasPrefix(hash, "$argon2id$") {
			// Keep the fuzzer fast: refuse costly parameters before hashing.
			if !strings.Contains(hash, "m=8,") || !strings.Contains(hash, "t=1,") {
				return
			}
		}
		Verify(hash, pw) // must not panic
	})
}

// The cache holds at most its size.
func TestAuthCacheBounded(t *testing.T) {
	c := NewCache(time.Minute, 3)
	for i := range 10 {
		c.Put(string(rune('a'+i))+"@example.org", "pw", 1)
		if c.Len() > 3 {
			t.Fatalf("%d entries in a cache of 3", c.Len())
		}
	}
	if !c.Hit("j@example.org", "pw", 1) || c.Hit("j@example.org", "pw", 2) || c.Hit("j@example.org", "px", 1) {
		t.Fatal("hit does not check the password and the stored hash")
	}
}

// liveHeap is the heap the last garbage collection found live, after one.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// After a burst of logins whose entries all expired, the cache drops them
// at the next login and gives their memory back: its map is made afresh,
// not left at the burst's size. Entries are kept until they expire.
func TestAuthCacheShrinksAfterBurst(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := NewCache(5*time.Minute, 200_000)
	c.Now = func() time.Time { return now }
	base := liveHeap()
	const burst = 100_000
	for i := range burst {
		c.Put(fmt.Sprintf("user%d@example.org", i), "pw", 1)
	}
	full := liveHeap()
	now = now.Add(4 * time.Minute)
	c.Put("late@example.org", "pw", 1)
	if c.Len() != burst+1 || !c.Hit("user7@example.org", "pw", 1) {
		t.Fatalf("%d entries before they expire, want %d, all hits", c.Len(), burst+1)
	}
	now = now.Add(2 * time.Minute) // the burst's entries expired, not late's
	c.Put("next@example.org", "pw", 1)
	if c.Len() != 2 || !c.Hit("late@example.org", "pw", 1) {
		t.Fatalf("%d entries once the burst's expired, want the 2 live ones", c.Len())
	}
	after := liveHeap()
	runtime.KeepAlive(c) // measured with the cache in use
	t.Logf("live heap: %d KiB before, %d KiB with the burst's entries, %d KiB once they went", base>>10, full>>10, after>>10)
	if full-base < burst*64 {
		t.Fatalf("the burst took %d bytes: the test measures nothing", full-base)
	}
	if after > base && after-base > (full-base)/8 {
		t.Fatalf("%d bytes still held once the entries went, of %d", after-base, full-base)
	}
}

// The hash semaphore is sized from the memory budget and the cores; an
// imported hash with a larger m takes more slots.
func TestHasherBudget(t *testing.T) {
	for _, c := range []struct {
		budget   int64
		cores    int
		want     int
		bigSlots int
	}{
		{64 << 20, 8, 3, 3},
		{64 << 20, 2, 2, 2},
		{1 << 20, 4, 1, 1},
		{1 << 30, 16, 16, 4},
	} {
		h := NewHasher(c.budget, c.cores)
		if cap(h.sem) != c.want {
			t.Errorf("NewHasher(%d, %d) has %d slots, want %d", c.budget, c.cores, cap(h.sem), c.want)
		}
		big := "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
		if got := h.Slots(big); got != c.bigSlots {
			t.Errorf("budget %d: a 64 MiB hash takes %d slots, want %d", c.budget, got, c.bigSlots)
		}
		if got := h.Slots("$2b$10$xxxxxxxx"); got != 1 {
			t.Errorf("bcrypt takes %d slots", got)
		}
	}
}

// A verification waits while the budget is in use, and one that gives up
// gives back the slots it had taken.
func TestHasherWaitsForBudget(t *testing.T) {
	h := NewHasher(2*HashSlot, 8)
	hash, err := Hash("pw")
	must(t, err)
	release, err := h.Acquire(context.Background(), 2)
	must(t, err)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Verify(cancelled, hash, "pw"); err == nil {
		t.Fatal("a verification ran beyond the memory budget")
	}
	release()
	one, err := h.Acquire(context.Background(), 1)
	must(t, err)
	big := "$argon2id$v=19$m=38912,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" // two slots
	if _, err := h.Verify(cancelled, big, "pw"); err == nil {
		t.Fatal("a two-slot verification ran with one slot free")
	}
	if len(h.sem) != 1 {
		t.Fatalf("%d slots held after a cancelled wait, want 1", len(h.sem))
	}
	one()
	if ok, err := h.Verify(context.Background(), hash, "pw"); err != nil || !ok {
		t.Fatalf("verify = %v, %v", ok, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A passwd-file parser never panics, and its errors never show a hash.
func FuzzReadPasswdFile(f *testing.F) {
	f.Add("a@example.org:{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA:1:1::/h::\n")
	f.Add("a@example.org:{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234\n# x\n\n")
	f.Add("nocolon\n{\n:{X")
	f.Fuzz(func(t *testing.T, file string) {
		users, err := ReadPasswdFile(strings.NewReader(file), 0)
		if err != nil && users != nil {
			t.Fatal("users and an error")
		}
		for _, u := range users {
			if CheckHash(u.Hash) != nil {
				t.Fatalf("accepted a hash CheckHash refuses: %q", u.Hash)
			}
		}
	})
}
