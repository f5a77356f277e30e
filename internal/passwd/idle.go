package passwd

import (
	"runtime/debug"
	"sync"
	"time"
)

// IdleDelay is how long hashing must have been quiet before the hasher hands
// its work memory back to the system.
//
// Each argon2id computation allocates its m parameter afresh (19 MiB for
// agua's hashes): golang.org/x/crypto/argon2 takes no buffer to reuse, and
// the memory is garbage once the hash is done. The Go runtime returns free
// memory to the system only gradually (its background scavenger, minutes
// for a burst's worth), so after a burst of logins the process's RSS stayed
// near the burst's peak. Once no hash has run for IdleDelay, the hasher asks
// the runtime to collect and return it at once (debug.FreeOSMemory): one
// garbage collection, at most once per IdleDelay and only after hashing, so
// that an idle server does nothing and a busy one is not slowed.
const IdleDelay = time.Second

// idleReturn schedules that collection: the last hash to finish arms a timer;
// when it fires, hashes that ran meanwhile push it back by another delay,
// and one still running leaves it to whichever finishes last.
type idleReturn struct {
	mu      sync.Mutex
	running int    // hashes holding slots now
	started uint64 // hashes started so far
	armed   bool   // a timer is pending
	armedAt uint64 // started when it was armed

	// Replaced by tests: the timer and what it does.
	afterFunc func(time.Duration, func())
	free      func()
}

func newIdleReturn() *idleReturn {
	return &idleReturn{
		afterFunc: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		free:      debug.FreeOSMemory,
	}
}

func (r *idleReturn) begin() {
	r.mu.Lock()
	r.running++
	r.started++
	r.mu.Unlock()
}

func (r *idleReturn) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running--
	if r.running == 0 && !r.armed {
		r.arm()
	}
}

// arm starts the timer; r.mu is held.
func (r *idleReturn) arm() {
	r.armed, r.armedAt = true, r.started
	r.afterFunc(IdleDelay, r.fire)
}

func (r *idleReturn) fire() {
	r.mu.Lock()
	r.armed = false
	switch {
	case r.running > 0:
		// The last of them to finish arms it again.
		r.mu.Unlock()
		return
	case r.started != r.armedAt:
		// Hashing went on meanwhile: wait for a quiet delay.
		r.arm()
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	r.free()
}
