package dnsbl

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/resolver"
)

// Config configures a Checker.
type Config struct {
	Sites []Site
	// Threshold: a score at or above it is listed (refused).
	Threshold int
	// AllowThreshold: a score at or below it is allowlisted (known-good).
	AllowThreshold int
	// Timeout bounds the lookups of one address (all lists, in parallel).
	Timeout time.Duration
	// CacheTTL is how long a result is kept; CacheSize the most kept.
	CacheTTL  time.Duration
	CacheSize int
	Now       func() time.Time
}

// Lookup is the A lookup of a resolver (resolver.Resolver.A).
type Lookup func(ctx context.Context, name string) ([]netip.Addr, resolver.Info, error)

// Answer is one list's answer for an address.
type Answer struct {
	List    string       `json:"list"`
	Weight  int          `json:"weight"` // the site's weight
	Listed  bool         `json:"listed"` // an answer matched the pattern
	Records []netip.Addr `json:"records,omitempty"`
	Error   string       `json:"error,omitempty"` // timeout, SERVFAIL: counted as not listed
}

// Result is the score of one address.
type Result struct {
	Addr        netip.Addr `json:"addr"`
	Done        bool       `json:"done"` // every list answered or timed out
	Score       int        `json:"score"`
	Listed      bool       `json:"listed"`      // Score >= threshold
	Allowlisted bool       `json:"allowlisted"` // Score <= allowlist threshold
	Answers     []Answer   `json:"answers"`
}

// ListedBy names the listing list of heaviest weight, "" for none.
func (r *Result) ListedBy() string {
	best := -1
	for i, a := range r.Answers {
		if a.Listed && a.Weight > 0 && (best < 0 || a.Weight > r.Answers[best].Weight) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return r.Answers[best].List
}

// Reason is "dnsbl:<list>", the refusal reason in logs and agua why.
func (r *Result) Reason() string { return "dnsbl:" + r.ListedBy() }

// Checker scores addresses. It is safe for concurrent use.
type Checker struct {
	cfg    Config
	lookup Lookup

	mu      sync.Mutex
	entries map[netip.Addr]*entry
}

type entry struct {
	done    chan struct{}
	res     Result
	expires time.Time
}

// New returns a Checker asking lookup.
func New(cfg Config, lookup Lookup) *Checker {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = time.Hour
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checker{cfg: cfg, lookup: lookup, entries: map[netip.Addr]*entry{}}
}

// Start begins the lookups of addr unless they are cached or running, and
// returns at once.
func (c *Checker) Start(addr netip.Addr) { c.start(addr.Unmap()) }

func (c *Checker) start(addr netip.Addr) *entry {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[addr]; ok && (e.expires.IsZero() || now.Before(e.expires)) {
		return e
	}
	if len(c.entries) >= c.cfg.CacheSize {
		c.evict(now)
	}
	e := &entry{done: make(chan struct{})}
	c.entries[addr] = e
	go c.run(addr, e)
	return e
}

// evict drops expired entries, or, when none is, any finished one: the
// table is bounded (Go's map iteration order spreads the choice).
func (c *Checker) evict(now time.Time) {
	for a, e := range c.entries {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			delete(c.entries, a)
		}
	}
	for a, e := range c.entries {
		if len(c.entries) < c.cfg.CacheSize {
			return
		}
		if !e.expires.IsZero() {
			delete(c.entries, a)
		}
	}
}

func (c *Checker) run(addr netip.Addr, e *entry) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	answers := make([]Answer, len(c.cfg.Sites))
	var wg sync.WaitGroup
	for i := range c.cfg.Sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = c.ask(ctx, addr, &c.cfg.Sites[i])
		}()
	}
	wg.Wait()
	res := Result{Addr: addr, Done: true, Answers: answers}
	for _, a := range answers {
		if a.Listed {
			res.Score += a.Weight
		}
	}
	res.Listed = res.Score >= c.cfg.Threshold
	res.Allowlisted = res.Score <= c.cfg.AllowThreshold
	c.mu.Lock()
	e.res = res
	e.expires = c.cfg.Now().Add(c.cfg.CacheTTL)
	c.mu.Unlock()
	close(e.done)
}

// ask queries one list. No such name, SERVFAIL and timeouts all mean not
// listed: a list that cannot answer must never refuse mail.
func (c *Checker) ask(ctx context.Context, addr netip.Addr, s *Site) Answer {
	a := Answer{List: s.Name, Weight: s.Weight}
	recs, _, err := c.lookup(ctx, QueryName(addr, s.Name))
	switch {
	case errors.Is(err, resolver.ErrNotFound):
	case err != nil:
		a.Error = err.Error()
	default:
		a.Records = recs
		for _, r := range recs {
			if s.Matches(r) {
				a.Listed = true
			}
		}
	}
	return a
}

// Peek returns addr's cached result without waiting; Done is false when
// the lookups have not finished, not started, or the result expired.
func (c *Checker) Peek(addr netip.Addr) Result {
	addr = addr.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[addr]; ok && !e.expires.IsZero() && c.cfg.Now().Before(e.expires) {
		return e.res
	}
	return Result{Addr: addr}
}

// Check starts the lookups of addr if needed and waits for them until ctx
// ends; then Done is false and the result says not listed.
func (c *Checker) Check(ctx context.Context, addr netip.Addr) Result {
	addr = addr.Unmap()
	e := c.start(addr)
	select {
	case <-e.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return e.res
	case <-ctx.Done():
		return Result{Addr: addr}
	}
}

// Sites returns the configured lists, sorted by name.
func (c *Checker) Sites() []Site {
	out := append([]Site(nil), c.cfg.Sites...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
