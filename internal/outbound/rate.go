package outbound

import (
	"sync"
	"time"
)

// maxRateKeys bounds the rate limiter's table (one entry per destination
// domain or MX host that has sent lately).
const maxRateKeys = 10000

// RateLimits are messages per minute to a destination: Default for every
// destination domain (0: unlimited), and PerDest for named destination
// domains or MX host names (the relay host too, by name).
type RateLimits struct {
	Default int
	PerDest map[string]int // lower-case domain or host name → messages per minute
}

// rateLimiter spaces messages to each key evenly: N per minute is one
// every minute/N (a generic cell rate algorithm without burst, so a peer
// never sees more than its rate in any window). The clock is passed in.
type rateLimiter struct {
	limits RateLimits
	mu     sync.Mutex
	next   map[string]time.Time // key → earliest time of the next message
}

func newRateLimiter(l RateLimits) *rateLimiter {
	return &rateLimiter{limits: l, next: map[string]time.Time{}}
}

// rate is the limit for key (a destination domain when dflt, else an MX
// host, limited only when named).
func (r *rateLimiter) rate(key string, dflt bool) int {
	if n, ok := r.limits.PerDest[key]; ok {
		return n
	}
	if dflt {
		return r.limits.Default
	}
	return 0
}

// take reserves one message to key at now, or says how long to wait.
func (r *rateLimiter) take(key string, dflt bool, now time.Time) (ok bool, wait time.Duration) {
	n := r.rate(key, dflt)
	if n <= 0 {
		return true, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.next[key]
	if now.Before(next) {
		return false, next.Sub(now)
	}
	if _, known := r.next[key]; !known && len(r.next) >= maxRateKeys {
		for k, t := range r.next {
			if !t.After(now) {
				delete(r.next, k)
			}
		}
		if len(r.next) >= maxRateKeys {
			clear(r.next) // all busy: forget, at worst one extra message each
		}
	}
	r.next[key] = now.Add(time.Minute / time.Duration(n))
	return true, 0
}
