package directory

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"sync"
	"time"
)

// authCache remembers recent successful logins, as Dovecot's auth_cache
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
// did it from another process. Entries of changed users are also dropped
// when the snapshot is rebuilt, and at once for changes made through this
// Directory. Failures are never cached: a wrong password always pays the
// full verification, as does an unknown user.
type authCache struct {
	ttl time.Duration
	max int
	now func() time.Time
	key [32]byte

	mu sync.Mutex
	m  map[string]authEntry
}

type authEntry struct {
	mac     [sha256.Size]byte
	pwFP    uint64
	expires time.Time
}

func newAuthCache(ttl time.Duration, max int) *authCache {
	c := &authCache{ttl: ttl, max: max, now: time.Now, m: map[string]authEntry{}}
	rand.Read(c.key[:]) // never fails (crypto/rand, Go 1.24)
	return c
}

func (c *authCache) mac(addr, password string) [sha256.Size]byte {
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
func (c *authCache) hit(addr, password string, pwFP uint64) bool {
	c.mu.Lock()
	e, ok := c.m[addr]
	c.mu.Unlock()
	if !ok || e.pwFP != pwFP || !c.now().Before(e.expires) {
		return false
	}
	mac := c.mac(addr, password)
	return subtle.ConstantTimeCompare(mac[:], e.mac[:]) == 1
}

// put records a successful login. When the cache is full, expired entries
// go first, then arbitrary ones: it is bounded, not exact.
func (c *authCache) put(addr, password string, pwFP uint64) {
	e := authEntry{mac: c.mac(addr, password), pwFP: pwFP, expires: c.now().Add(c.ttl)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[addr]; !ok && len(c.m) >= c.max {
		now := c.now()
		for a, old := range c.m {
			if !now.Before(old.expires) {
				delete(c.m, a)
			}
		}
		for a := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, a)
		}
	}
	c.m[strings.Clone(addr)] = e // not a piece of the client's command line
}

// forget drops the entry of addr.
func (c *authCache) forget(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, addr)
}

// sync drops the entries of users that are gone from snap or whose stored
// hash changed.
func (c *authCache) sync(snap *snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, e := range c.m {
		if r, ok := snap.users[a]; !ok || r.pwFP != e.pwFP {
			delete(c.m, a)
		}
	}
}

func (c *authCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
