// Package greylist implements greylisting of inbound mail (RFC 6647): the
// first delivery attempt of a triplet (client network, envelope sender,
// recipient) is deferred with a temporary error; a real MTA retries after
// its queue interval, and a retry after the minimum delay and within the
// retry window passes. Much bulk software never retries.
//
// The practices of RFC 6647 (4.2 for the triplet, 6 for the operational
// guidance) followed here:
//   - the client address is masked to its network (/24 for IPv4, /64 for
//     IPv6): large senders retry from another host of the same pool;
//   - a minimum delay (default 5 minutes: short enough that legitimate
//     mail is barely late, long enough that bulk software gives up) and a
//     retry window (default 4 hours, after which the triplet starts over);
//   - a passed triplet stays allowed for a long time (default 36 days,
//     which covers monthly mail), renewed by every message;
//   - a network whose triplets passed several times is allowed for every
//     sender and recipient (auto-allow), for the same 36 days;
//   - the deferral is a 451 4.7.1 with a text saying what happens (the
//     caller writes the reply).
//
// The tables are bounded (Config.MaxEntries): when full, expired entries go
// first, then pending ones, then any. State survives restarts through Save
// and Load (an atomic file, internal/atomicfile).
package greylist

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/atomicfile"
)

// Defaults (RFC 6647 4.2, 4.3).
const (
	DefaultDelay      = 5 * time.Minute
	DefaultWindow     = 4 * time.Hour
	DefaultPassTTL    = 36 * 24 * time.Hour
	DefaultAutoAllow  = 5
	DefaultMaxEntries = 100_000
)

// Config configures a Greylist. Zero values take the defaults.
type Config struct {
	// Delay is the least time between the first attempt and a retry that
	// passes.
	Delay time.Duration
	// Window is how long after the first attempt a retry may pass; a
	// later one starts over.
	Window time.Duration
	// PassTTL is how long a passed triplet, and an auto-allowed network,
	// stay allowed after their last message.
	PassTTL time.Duration
	// AutoAllow is how many triplets of one network must pass before the
	// network is allowed for every sender and recipient; negative: never.
	AutoAllow int
	// MaxEntries bounds the triplets kept, and separately the networks.
	MaxEntries int
}

func (c *Config) defaults() {
	if c.Delay <= 0 {
		c.Delay = DefaultDelay
	}
	if c.Window <= c.Delay {
		c.Window = max(DefaultWindow, 2*c.Delay)
	}
	if c.PassTTL <= 0 {
		c.PassTTL = DefaultPassTTL
	}
	if c.AutoAllow == 0 {
		c.AutoAllow = DefaultAutoAllow
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultMaxEntries
	}
}

// Network is the greylisting network of addr: /24 for IPv4, /64 for IPv6
// (RFC 6647 4.1).
func Network(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 64
	if addr.Is4() {
		bits = 24
	}
	p, _ := addr.Prefix(bits)
	return p
}

// Verdict is the decision on one delivery attempt.
type Verdict struct {
	Pass bool
	// Why: "new" (first attempt), "early" (retried before the delay),
	// "retried" (passed now), "passed" (passed before), "network"
	// (auto-allowed network).
	Why string
	// Retry is when a deferred attempt may pass (zero when Pass).
	Retry time.Time
}

// triplet is an entry of the table.
type triplet struct {
	First   time.Time `json:"first"`            // first attempt (of this window)
	Passed  bool      `json:"passed,omitempty"` // a retry passed
	Expires time.Time `json:"expires"`          // pending: first+window; passed: last+PassTTL
}

type network struct {
	Passes  int       `json:"passes"`            // triplets that passed
	Allowed bool      `json:"allowed,omitempty"` // auto-allowed
	Expires time.Time `json:"expires"`
}

// Greylist is the greylisting table. It is safe for concurrent use.
type Greylist struct {
	mu       sync.Mutex
	cfg      Config
	triplets map[string]*triplet
	nets     map[netip.Prefix]*network
	dirty    bool
}

// New returns an empty Greylist.
func New(cfg Config) *Greylist {
	cfg.defaults()
	return &Greylist{cfg: cfg, triplets: map[string]*triplet{}, nets: map[netip.Prefix]*network{}}
}

// SetConfig applies a new configuration (a reload); the table is kept.
func (g *Greylist) SetConfig(cfg Config) {
	cfg.defaults()
	g.mu.Lock()
	g.cfg = cfg
	g.mu.Unlock()
}

// key is the triplet's table key. Addresses compare without case (the
// local part is case-sensitive in principle, RFC 5321 2.4, but senders do
// not vary it between retries and spammers would gain nothing).
func key(n netip.Prefix, from, rcpt string) string {
	return n.String() + " " + strings.ToLower(from) + " " + strings.ToLower(rcpt)
}

// Check decides on an attempt to deliver from the client addr, with the
// envelope sender from ("" for the null reverse-path), to rcpt, at now.
func (g *Greylist) Check(addr netip.Addr, from, rcpt string, now time.Time) Verdict {
	n := Network(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	c := &g.cfg
	if nw, ok := g.nets[n]; ok && nw.Allowed && now.Before(nw.Expires) {
		nw.Expires = now.Add(c.PassTTL)
		g.dirty = true
		return Verdict{Pass: true, Why: "network"}
	}
	k := key(n, from, rcpt)
	t, ok := g.triplets[k]
	if ok && !now.Before(t.Expires) {
		ok = false // expired: a pending one's window ended, or a passed one aged
	}
	g.dirty = true
	switch {
	case !ok:
		g.makeRoom(now)
		g.triplets[k] = &triplet{First: now, Expires: now.Add(c.Window)}
		return Verdict{Why: "new", Retry: now.Add(c.Delay)}
	case t.Passed:
		t.Expires = now.Add(c.PassTTL)
		return Verdict{Pass: true, Why: "passed"}
	case now.Before(t.First.Add(c.Delay)):
		return Verdict{Why: "early", Retry: t.First.Add(c.Delay)}
	}
	// RFC 6647 4.2: a retry after the delay, within the window.
	t.Passed, t.Expires = true, now.Add(c.PassTTL)
	g.passed(n, now)
	return Verdict{Pass: true, Why: "retried"}
}

// passed counts a triplet of n that passed, and allows n once AutoAllow
// have (RFC 6647 4.3).
func (g *Greylist) passed(n netip.Prefix, now time.Time) {
	nw, ok := g.nets[n]
	if !ok || !now.Before(nw.Expires) {
		if !ok && len(g.nets) >= g.cfg.MaxEntries {
			evict(g.nets, g.cfg.MaxEntries, now, func(v *network) (time.Time, bool) { return v.Expires, v.Allowed })
		}
		nw = &network{}
		g.nets[n] = nw
	}
	nw.Passes++
	nw.Expires = now.Add(g.cfg.PassTTL)
	if g.cfg.AutoAllow > 0 && nw.Passes >= g.cfg.AutoAllow {
		nw.Allowed = true
	}
}

func (g *Greylist) makeRoom(now time.Time) {
	if len(g.triplets) >= g.cfg.MaxEntries {
		evict(g.triplets, g.cfg.MaxEntries, now, func(t *triplet) (time.Time, bool) { return t.Expires, t.Passed })
	}
}

// evict brings m below 90% of max: expired entries first, then those not
// kept (pending triplets, networks not allowed), then any. Go's map order
// spreads the choice among equals.
func evict[K comparable, V any](m map[K]V, maxN int, now time.Time, info func(V) (expires time.Time, keep bool)) {
	target := maxN - maxN/10 - 1
	for pass := 0; pass < 3 && len(m) > target; pass++ {
		for k, v := range m {
			if len(m) <= target {
				return
			}
			exp, keep := info(v)
			if pass == 2 || !now.Before(exp) || pass == 1 && !keep {
				delete(m, k)
			}
		}
	}
}

// Len returns the number of triplets and networks kept.
func (g *Greylist) Len() (triplets, networks int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.triplets), len(g.nets)
}

// state is the file's format.
type state struct {
	Version  int                 `json:"version"`
	Triplets map[string]*triplet `json:"triplets"`
	Networks map[string]*network `json:"networks"`
}

// ErrBadState is the kind of a state file that cannot be read.
var ErrBadState = errors.New("greylist: bad state file")

// Save writes the table to path (atomically) if it changed since the last
// Save or Load, dropping expired entries.
func (g *Greylist) Save(path string, now time.Time) error {
	g.mu.Lock()
	if !g.dirty {
		g.mu.Unlock()
		return nil
	}
	st := state{Version: 1, Triplets: map[string]*triplet{}, Networks: map[string]*network{}}
	for k, t := range g.triplets {
		if now.Before(t.Expires) {
			c := *t
			st.Triplets[k] = &c
		}
	}
	for n, v := range g.nets {
		if now.Before(v.Expires) {
			c := *v
			st.Networks[n.String()] = &c
		}
	}
	g.dirty = false
	g.mu.Unlock()
	data, err := json.Marshal(st)
	if err == nil {
		err = atomicfile.Write(path, data, 0o600)
	}
	if err != nil {
		g.mu.Lock()
		g.dirty = true
		g.mu.Unlock()
	}
	return err
}

// Load replaces the table with the one saved at path; a missing file is an
// empty table. Entries beyond MaxEntries, expired ones and malformed keys
// are dropped.
func (g *Greylist) Load(path string, now time.Time) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil || st.Version != 1 {
		return fmt.Errorf("%w: %s: %v", ErrBadState, path, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.triplets = map[string]*triplet{}
	g.nets = map[netip.Prefix]*network{}
	for k, t := range st.Triplets {
		if t == nil || !now.Before(t.Expires) || len(g.triplets) >= g.cfg.MaxEntries {
			continue
		}
		if n, _, ok := strings.Cut(k, " "); !ok || !validPrefix(n) {
			continue
		}
		g.triplets[k] = t
	}
	for k, v := range st.Networks {
		p, err := netip.ParsePrefix(k)
		if v == nil || err != nil || !now.Before(v.Expires) || len(g.nets) >= g.cfg.MaxEntries {
			continue
		}
		g.nets[p] = v
	}
	g.dirty = false
	return nil
}

func validPrefix(s string) bool {
	_, err := netip.ParsePrefix(s)
	return err == nil
}
