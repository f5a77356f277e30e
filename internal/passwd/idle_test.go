package passwd

import (
	"context"
	"strings"
	"testing"
	"time"
)

// manualTimers stands in for time.AfterFunc: the test fires the timers.
type manualTimers struct {
	pending []func()
	delays  []time.Duration
}

func (m *manualTimers) afterFunc(d time.Duration, f func()) {
	m.pending = append(m.pending, f)
	m.delays = append(m.delays, d)
}

// fire runs the timers armed so far and reports how many there were.
func (m *manualTimers) fire() int {
	p := m.pending
	m.pending = nil
	for _, f := range p {
		f()
	}
	return len(p)
}

// The hashing memory goes back to the system once hashing has been quiet
// for IdleDelay: not while a hash runs, not while hashes keep coming, once
// per quiet spell, and never without hashing.
func TestHasherReturnsMemoryWhenIdle(t *testing.T) {
	h := NewHasher(3*HashSlot, 3)
	timers := &manualTimers{}
	frees := 0
	h.idle.afterFunc, h.idle.free = timers.afterFunc, func() { frees++ }
	acquire := func() func() {
		t.Helper()
		release, err := h.Acquire(context.Background(), 1)
		must(t, err)
		return release
	}

	if timers.fire() != 0 || frees != 0 {
		t.Fatal("a timer or a collection before any hashing")
	}
	r1 := acquire()
	r2 := acquire()
	r1()
	if len(timers.pending) != 0 {
		t.Fatal("armed while a hash still runs")
	}
	r2()
	r2() // a second release changes nothing
	if len(timers.pending) != 1 || timers.delays[0] != IdleDelay {
		t.Fatalf("after the last hash: %d timers (%v), want one of IdleDelay", len(timers.pending), timers.delays)
	}

	// A hash started and finished before the timer fires pushes it back.
	acquire()()
	if len(timers.pending) != 1 {
		t.Fatalf("%d timers pending, want still one", len(timers.pending))
	}
	timers.fire()
	if frees != 0 || len(timers.pending) != 1 {
		t.Fatalf("hashing went on: %d collections, %d timers; want none and one", frees, len(timers.pending))
	}
	// A hash running when it fires: no collection, and its end arms again.
	r3 := acquire()
	timers.fire()
	if frees != 0 || len(timers.pending) != 0 {
		t.Fatalf("a hash running: %d collections, %d timers", frees, len(timers.pending))
	}
	// Quiet for a whole delay after it: exactly one collection, and
	// nothing armed.
	r3()
	if timers.fire() != 1 || frees != 1 || len(timers.pending) != 0 {
		t.Fatalf("quiet: %d collections, %d timers; want one and none", frees, len(timers.pending))
	}
	if timers.fire() != 0 || frees != 1 {
		t.Fatal("a collection without hashing")
	}
	// A cancelled wait hashed nothing and arms nothing.
	all, _ := h.Acquire(context.Background(), 3)
	timers.pending = nil
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Acquire(ctx, 1); err == nil {
		t.Fatal("acquired beyond the budget")
	}
	all()
	if len(timers.pending) != 1 {
		t.Fatalf("%d timers after the held slots went back, want one", len(timers.pending))
	}
}

// Unknown users are verified against a constant hash with agua's own
// parameters (so they cost what a wrong password does), which no password
// matches and which costs nothing to make.
func TestDummyHash(t *testing.T) {
	if err := CheckHash(dummyHash); err != nil {
		t.Fatal(err)
	}
	real, err := Hash("some password")
	must(t, err)
	params := func(h string) string { return strings.Join(strings.Split(h, "$")[:4], "$") }
	if params(dummyHash) != params(real) {
		t.Fatalf("dummy %s, own hashes %s: different costs", params(dummyHash), params(real))
	}
	h := NewHasher(DefaultHashMemory, 2)
	if h.Slots(dummyHash) != h.Slots(real) {
		t.Fatal("the dummy takes other slots")
	}
	n := 0
	h.Observe = func() { n++ }
	if _, err := h.Check(context.Background(), "agua dummy password for unknown users", true, func() (string, bool, error) { return "", false, nil }); err == nil || n != 1 {
		t.Fatalf("unknown user: %v after %d verifications, want a failure after one", err, n)
	}
}
