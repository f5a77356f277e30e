package greylist

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.77":             "192.0.2.0/24",
		"::ffff:192.0.2.77":      "192.0.2.0/24",
		"2001:db8:1:2:3:4:5:6":   "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::123": "2001:db8:1:2::/64",
	} {
		if got := Network(addr(in)).String(); got != want {
			t.Errorf("Network(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestRetryCycle(t *testing.T) {
	g := New(Config{Delay: 5 * time.Minute, Window: 4 * time.Hour, AutoAllow: -1})
	a := addr("192.0.2.10")
	if v := g.Check(a, "s@example.org", "u@example.com", t0); v.Pass || v.Why != "new" || !v.Retry.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("first attempt: %+v", v)
	}
	if v := g.Check(a, "s@example.org", "u@example.com", t0.Add(time.Minute)); v.Pass || v.Why != "early" {
		t.Fatalf("retry before the delay: %+v", v)
	}
	// Another host of the same /24 retries (a sender's pool).
	if v := g.Check(addr("192.0.2.200"), "S@Example.org", "u@example.com", t0.Add(6*time.Minute)); !v.Pass || v.Why != "retried" {
		t.Fatalf("retry after the delay from the same /24: %+v", v)
	}
	if v := g.Check(a, "s@example.org", "u@example.com", t0.Add(30*24*time.Hour)); !v.Pass || v.Why != "passed" {
		t.Fatalf("a month later: %+v", v)
	}
	// Another network is a new triplet.
	if v := g.Check(addr("192.0.3.10"), "s@example.org", "u@example.com", t0.Add(7*time.Minute)); v.Pass {
		t.Fatalf("other /24 passed: %+v", v)
	}
	// A retry after the window starts over.
	b := addr("198.51.100.1")
	g.Check(b, "x@example.org", "u@example.com", t0)
	if v := g.Check(b, "x@example.org", "u@example.com", t0.Add(5*time.Hour)); v.Pass || v.Why != "new" {
		t.Fatalf("retry after the window: %+v", v)
	}
}

func TestAutoAllow(t *testing.T) {
	g := New(Config{Delay: time.Minute, AutoAllow: 2})
	a := addr("2001:db8::1")
	for i := range 2 {
		rcpt := fmt.Sprintf("u%d@example.com", i)
		g.Check(a, "s@example.org", rcpt, t0)
		if v := g.Check(a, "s@example.org", rcpt, t0.Add(2*time.Minute)); !v.Pass {
			t.Fatalf("retry %d: %+v", i, v)
		}
	}
	// A new sender and recipient from another host of the /64 passes at once.
	if v := g.Check(addr("2001:db8::ffff"), "new@example.net", "other@example.com", t0.Add(3*time.Minute)); !v.Pass || v.Why != "network" {
		t.Fatalf("auto-allowed network: %+v", v)
	}
	// Other networks are not.
	if v := g.Check(addr("2001:db8:0:1::1"), "new@example.net", "other@example.com", t0.Add(3*time.Minute)); v.Pass {
		t.Fatalf("neighbouring /64 passed: %+v", v)
	}
	// The allowance ends PassTTL after the last message.
	if v := g.Check(a, "new2@example.net", "o@example.com", t0.Add(3*time.Minute+DefaultPassTTL)); v.Pass {
		t.Fatalf("expired allowance: %+v", v)
	}
}

func TestBounded(t *testing.T) {
	g := New(Config{Delay: time.Minute, MaxEntries: 100})
	// One triplet that passed, then a flood of new ones.
	good := addr("192.0.2.1")
	g.Check(good, "s@example.org", "u@example.com", t0)
	g.Check(good, "s@example.org", "u@example.com", t0.Add(2*time.Minute))
	for i := range 10_000 {
		g.Check(addr(fmt.Sprintf("10.%d.%d.1", i/256, i%256)), "spam@example.net", "u@example.com", t0.Add(3*time.Minute))
	}
	if n, _ := g.Len(); n > 100 {
		t.Fatalf("%d triplets kept, bound 100", n)
	}
	// Pending triplets were evicted before the passed one.
	if v := g.Check(good, "s@example.org", "u@example.com", t0.Add(4*time.Minute)); !v.Pass {
		t.Fatalf("passed triplet evicted by a flood: %+v", v)
	}
}

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "greylist.json")
	g := New(Config{Delay: time.Minute, AutoAllow: 1})
	g.Check(addr("192.0.2.1"), "s@example.org", "u@example.com", t0)                       // pending
	g.Check(addr("198.51.100.1"), "s@example.org", "u@example.com", t0)                    // passes below
	g.Check(addr("198.51.100.1"), "s@example.org", "u@example.com", t0.Add(2*time.Minute)) // network allowed
	if err := g.Save(path, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	h := New(Config{Delay: time.Minute, AutoAllow: 1})
	if err := h.Load(path, t0.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if v := h.Check(addr("192.0.2.9"), "s@example.org", "u@example.com", t0.Add(3*time.Minute)); !v.Pass || v.Why != "retried" {
		t.Fatalf("pending triplet lost across restart: %+v", v)
	}
	if v := h.Check(addr("198.51.100.7"), "a@b.example", "c@d.example", t0.Add(3*time.Minute)); !v.Pass || v.Why != "network" {
		t.Fatalf("allowed network lost across restart: %+v", v)
	}
	// Missing file: empty table; garbage: a typed error.
	if err := New(Config{}).Load(filepath.Join(t.TempDir(), "none"), t0); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("{not json"), 0o600)
	if err := h.Load(path, t0); !errors.Is(err, ErrBadState) {
		t.Fatalf("garbage state: %v", err)
	}
}
