package passwd

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// Cache remembers recent successful logins, as Dovecot's auth_cache
// does, so that a mail client that polls every minute does not pay
// argon2id (19 MiB, tens of milliseconds) each time.
//
// An entry is keyed by the user's address and holds an HMAC-SHA256, under a
// key drawn at random for this process, of the address and the password
// that succeeded — never the password — together with the fingerprint of
// the stored hash it was checked against and an expiry. A login hits only
// with the same password, before the expiry, while the stored hash is the
// same one: `agua user passwd` changes the hash, and a removed user is not
// found at all, so neither can be served from the cache even when the CLI
// did it from another process. A backend also drops the entries of changed
// users (Forget, Retain, Clear) as it learns of changes. Failures are never
// cached: a wrong password always pays the full verification, as does an
// unknown user.
//
// Expired entries go at the first Put a TTL after the last sweep (one pass
// over the map, at most once per TTL), and when that leaves the map at less
// than a quarter of the most it held, the map is built afresh: a Go map
// keeps the room of its largest size, so after a burst of first logins
// (100,000 of them: about 15 MB) the memory would otherwise stay for good.
type Cache struct {
	ttl time.Duration
	max int
	Now func() time.Time // the clock; tests replace it
	key [32]byte

	mu        sync.Mutex
	m         map[string]entry
	peak      int       // most entries m held since it was made
	nextSweep time.Time // expired entries go at the first Put from then
}

// shrinkMin is the smallest peak worth making a map afresh for.
const shrinkMin = 1024

type entry struct {
	mac     [sha256.Size]byte
	pwFP    uint64
	expires time.Time
}

// NewCache returns a cache whose entries live ttl, at most max of them.
func NewCache(ttl time.Duration, max int) *Cache {
	c := &Cache{ttl: ttl, max: max, Now: time.Now, m: map[string]entry{}}
	rand.Read(c.key[:]) // never fails (crypto/rand, Go 1.24)
	return c
}

func (c *Cache) mac(addr, password string) [sha256.Size]byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(addr))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// hit reports whether addr logged in with password recently, against the
// stored hash whose fingerprint is pwFP.
func (c *Cache) Hit(addr, password string, pwFP uint64) bool {
	c.mu.Lock()
	e, ok := c.m[addr]
	c.mu.Unlock()
	if !ok || e.pwFP != pwFP || !c.Now().Before(e.expires) {
		return false
	}
	mac := c.mac(addr, password)
	return subtle.ConstantTimeCompare(mac[:], e.mac[:]) == 1
}

// put records a successful login. When the cache is full, expired entries
// go first, then arbitrary ones: it is bounded, not exact.
func (c *Cache) Put(addr, password string, pwFP uint64) {
	now := c.Now()
	e := entry{mac: c.mac(addr, password), pwFP: pwFP, expires: now.Add(c.ttl)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[addr]; !ok && len(c.m) >= c.max || !now.Before(c.nextSweep) {
		c.sweep(now)
	}
	if _, ok := c.m[addr]; !ok && len(c.m) >= c.max {
		for a := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, a)
		}
	}
	c.m[strings.Clone(addr)] = e // not a piece of the client's command line
	c.peak = max(c.peak, len(c.m))
}

// sweep drops the expired entries and makes the map afresh when it holds
// less than a quarter of its peak; c.mu is held.
func (c *Cache) sweep(now time.Time) {
	c.nextSweep = now.Add(c.ttl)
	for a, old := range c.m {
		if !now.Before(old.expires) {
			delete(c.m, a)
		}
	}
	if c.peak >= shrinkMin && len(c.m) < c.peak/4 {
		m := make(map[string]entry, len(c.m))
		for a, e := range c.m {
			m[a] = e
		}
		c.m, c.peak = m, len(m)
	}
}

// forget drops the entry of addr.
func (c *Cache) Forget(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, addr)
}

// Retain keeps the entries for which current returns the fingerprint they
// were checked against, and drops those of users that are gone (ok false)
// or whose stored hash changed.
func (c *Cache) Retain(current func(addr string) (fp uint64, ok bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, e := range c.m {
		if fp, ok := current(a); !ok || fp != e.pwFP {
			delete(c.m, a)
		}
	}
}

// Clear drops every entry: the backend can no longer tell which are still
// true (it lost track of changes).
func (c *Cache) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.peak = map[string]entry{}, 0
}

// fpSeed keys the fingerprints of password hashes; per process, so a
// fingerprint means nothing outside it.
var fpSeed = maphash.MakeSeed()

// Fingerprint identifies a stored password hash: when it changes
// (`agua user passwd`), every cached login of the user stops matching.
func Fingerprint(stored []byte) uint64 { return maphash.Bytes(fpSeed, stored) }

func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
