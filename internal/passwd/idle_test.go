package passwd

import (
	"context"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingFree stands in for debug.FreeOSMemory: it counts the releases and
// can be held, to see what happens while one runs.
type countingFree struct {
	mu    sync.Mutex
	n     int
	hold  chan struct{} // when set, a release waits for it
	calls chan int      // every release's number, as it starts
}

func newCountingFree() *countingFree { return &countingFree{calls: make(chan int, 100)} }

func (f *countingFree) free() {
	f.mu.Lock()
	f.n++
	n, hold := f.n, f.hold
	f.mu.Unlock()
	f.calls <- n
	if hold != nil {
		<-hold
	}
}

// wait returns the number of the next release, failing the test when none
// comes within a generous bound (a goroutine to schedule, not a delay to
// measure).
func (f *countingFree) wait(t *testing.T) int {
	t.Helper()
	select {
	case n := <-f.calls:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no release of the hashing memory")
		return 0
	}
}

// waitFor waits until cond holds, failing the test when it does not within
// a generous bound (goroutines to schedule, not a delay to measure).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("never: " + what)
		}
	}
}

// drainState reads the release's counters under its lock.
func drainState(h *Hasher) (pending int, running bool, releases uint64) {
	h.drain.mu.Lock()
	defer h.drain.mu.Unlock()
	return h.drain.pending, h.drain.running, h.drain.releases
}

// settled waits until no release goroutine runs and returns how many
// releases started.
func settled(t *testing.T, h *Hasher) uint64 {
	t.Helper()
	waitFor(t, "the release goroutine ends", func() bool { _, running, _ := drainState(h); return !running })
	_, _, n := drainState(h)
	return n
}

// The hashing memory goes back as soon as the queue drains — no timer, no
// quiet spell to wait for — but not while a hash runs or waits for a slot,
// once per drain, and never without hashing.
func TestHasherReleasesWhenQueueDrains(t *testing.T) {
	h := NewHasher(2*HashSlot, 2)
	f := newCountingFree()
	h.drain.free = f.free
	acquire := func(n int) func() {
		t.Helper()
		release, err := h.Acquire(context.Background(), n)
		must(t, err)
		return release
	}

	if settled(t, h) != 0 {
		t.Fatal("a release before any hashing")
	}
	// Two hashes hold the two slots, a third waits.
	r1, r2 := acquire(1), acquire(1)
	got := make(chan func())
	go func() {
		release, err := h.Acquire(context.Background(), 1)
		if err != nil {
			t.Error(err)
		}
		got <- release
	}()
	waitFor(t, "a third hash waits", func() bool { pending, _, _ := drainState(h); return pending == 3 })
	r1()
	r3 := <-got
	r2()
	if n := settled(t, h); n != 0 {
		t.Fatalf("%d releases while hashes still ran or waited, want none", n)
	}
	r3()
	r3() // a second call of a release changes nothing
	if n := f.wait(t); n != 1 {
		t.Fatalf("release %d after the queue drained, want the first", n)
	}
	if n := settled(t, h); n != 1 {
		t.Fatalf("%d releases after one drain, want one", n)
	}

	// Hashes that run and drain while a release is at work make one more
	// release after it, not one each.
	f.mu.Lock()
	f.hold = make(chan struct{})
	hold := f.hold
	f.mu.Unlock()
	acquire(1)()
	if n := f.wait(t); n != 2 {
		t.Fatalf("release %d, want the second", n)
	}
	acquire(1)()
	acquire(2)()
	f.mu.Lock()
	f.hold = nil
	f.mu.Unlock()
	close(hold)
	if n := f.wait(t); n != 3 {
		t.Fatalf("release %d, want the third", n)
	}
	if n := settled(t, h); n != 3 {
		t.Fatalf("%d releases, want three: hashes during a release make one more", n)
	}

	// A cancelled wait hashed nothing: when it is all that happened, no
	// release; the held slots going back make one.
	all := acquire(2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Acquire(ctx, 1); err == nil {
		t.Fatal("acquired beyond the budget")
	}
	if n := settled(t, h); n != 3 {
		t.Fatalf("%d releases with a hash still holding slots, want three", n)
	}
	all()
	if n := f.wait(t); n != 4 {
		t.Fatalf("release %d, want the fourth", n)
	}
	settled(t, h)
	// The slots taken behind the hasher's back, so that only the cancelled
	// wait goes through it.
	h.sem <- struct{}{}
	h.sem <- struct{}{}
	if _, err := h.Acquire(ctx, 1); err == nil {
		t.Fatal("acquired beyond the budget")
	}
	<-h.sem
	<-h.sem
	if n := settled(t, h); n != 4 {
		t.Fatalf("%d releases after a cancelled wait alone, want still four", n)
	}
}

// heapResident is the Go heap's memory that the process holds from the
// system: objects (live or garbage not yet collected), free spans kept, and
// unused parts of spans; not what was returned (released).
func heapResident() uint64 {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64() + s[2].Value.Uint64()
}

// With the real runtime: after a burst of argon2id verifications the
// hasher's release leaves the heap holding less than one hash's work memory
// (19 MiB), where the burst had several hashes' worth of garbage in it.
func TestHasherBurstMemoryGoesBack(t *testing.T) {
	h := NewHasher(2*HashSlot, 2)
	n := 0
	h.Observe = func() { n++ }
	released := make(chan struct{}, 100)
	free := h.drain.free
	h.drain.free = func() { free(); released <- struct{}{} }
	stored, err := Hash("burst password")
	must(t, err)
	peak := uint64(0)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			if ok, err := h.Verify(context.Background(), stored, "burst password"); err != nil || !ok {
				t.Errorf("verify: %v %v", ok, err)
			}
			mu.Lock()
			peak = max(peak, heapResident())
			mu.Unlock()
		})
	}
	wg.Wait()
	if n != 6 {
		t.Fatalf("%d verifications observed, want 6", n)
	}
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("no release after the burst")
	}
	settled(t, h)
	after := heapResident()
	t.Logf("Go heap held: %.1f MiB at its peak during the burst, %.1f MiB after the release", float64(peak)/(1<<20), float64(after)/(1<<20))
	if peak < 2*HashSlot {
		t.Fatalf("the burst never held two hashes' memory (%d bytes): the test measures nothing", peak)
	}
	if after >= HashSlot {
		t.Fatalf("%d bytes of heap held after the release, want less than one hash's %d", after, HashSlot)
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
