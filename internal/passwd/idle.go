package passwd

import (
	"runtime/debug"
	"sync"
)

// drainRelease hands the work memory of hashing back to the system as soon
// as the hash queue drains: no hash holds a slot and none waits for one.
//
// Each argon2id computation allocates its m parameter afresh (19 MiB for
// agua's hashes): golang.org/x/crypto/argon2 takes no buffer to reuse
// (initBlocks makes a []block of m KiB on every call), and that memory is
// garbage once the hash is done. The Go runtime frees garbage at its next
// collection and returns free pages to the system only down to about its
// heap goal, which a burst of hashes left at several times the server's
// live heap, so after a burst the process's RSS stayed near the burst's
// peak (136.8 MB at the end of 1,000 first logins, issue 15). Once the
// queue drains, a background goroutine asks the runtime to collect and
// return that memory at once (debug.FreeOSMemory).
//
// Why at the drain and not later: a hash is 19 MiB of garbage and most of a
// garbage collection's worth of allocation on its own, so the collection
// that FreeOSMemory runs mostly replaces the one the next hash would have
// caused, and its scavenging costs page faults the size of one hash the
// next time. While hashes queue (a burst) the queue does not drain and
// nothing is done; a release runs only after at least one hash and never
// two at once (drains during a release make one more, not one each).
type drainRelease struct {
	mu       sync.Mutex
	pending  int    // hashes waiting for or holding slots
	ran      bool   // a hash ran since the last release started
	running  bool   // a release goroutine is at work
	releases uint64 // releases started so far (tests)

	// free returns the memory: debug.FreeOSMemory; tests replace it.
	free func()
}

func newDrainRelease() *drainRelease { return &drainRelease{free: debug.FreeOSMemory} }

// enter counts a hash that starts waiting for its slots.
func (r *drainRelease) enter() {
	r.mu.Lock()
	r.pending++
	r.mu.Unlock()
}

// leave counts a hash that gave its slots back (ran) or gave up waiting
// (!ran, its context ended), and starts a release when that drained the
// queue after some hashing.
func (r *drainRelease) leave(ran bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending--
	r.ran = r.ran || ran
	if r.pending == 0 && r.ran && !r.running {
		r.running = true
		go r.loop()
	}
}

// loop releases until the queue is busy again or no hash ran since the
// last release began.
func (r *drainRelease) loop() {
	for {
		r.mu.Lock()
		if r.pending > 0 || !r.ran {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.ran = false
		r.releases++
		r.mu.Unlock()
		r.free()
	}
}
