package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/atomicfile"
	"github.com/agua-mail/agua/internal/resolver"
)

// Limits of fetching and caching.
const (
	// DefaultMaxEntries bounds the cache (one entry per destination
	// domain that has a policy).
	DefaultMaxEntries = 10000
	// maxPolicySize bounds the policy file read (RFC 8461 3.3 lets senders
	// bound it; real policies are a few hundred bytes).
	maxPolicySize = 64 << 10
	// fetchTimeout bounds one HTTPS fetch (RFC 8461 3.3: "SHOULD" use a
	// timeout; a minute at most).
	fetchTimeout = time.Minute
	// retryFailed is how long a failed fetch is remembered, so that a
	// domain with a broken policy host is not fetched for every message.
	retryFailed = 5 * time.Minute
	// cacheFile is the persisted cache in the data folder.
	cacheFile = "mta-sts.json"
)

// Options configure a Cache.
type Options struct {
	// TXT returns the TXT records of a name; no records (or no such name)
	// is nil with a nil error, and any error is a failed lookup.
	TXT func(ctx context.Context, name string) ([]string, error)
	// Dial connects to the policy host (a resolver of our own, or tests
	// mapping the name to loopback). Nil: net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs verify the policy host's certificate; nil: the system's.
	RootCAs *x509.CertPool
	// Dir keeps the cache across restarts (<Dir>/mta-sts.json); "" keeps
	// it in memory only.
	Dir        string
	MaxEntries int // default DefaultMaxEntries
	Logger     *slog.Logger
	Now        func() time.Time
}

// entry is one domain's cached policy.
type entry struct {
	ID      string    `json:"id"` // the TXT record's id when fetched
	Policy  Policy    `json:"policy"`
	Expires time.Time `json:"expires"` // fetch time + max_age
}

// Cache finds and keeps MTA-STS policies. It is safe for concurrent use.
type Cache struct {
	opts   Options
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]*entry    // by lower-case domain
	failed  map[string]time.Time // domain → no new fetch before (bounded like entries)
	saveMu  sync.Mutex
}

// New returns a cache, loading the persisted entries from Dir (a file that
// does not parse is logged and ignored: policies are fetched again).
func New(o Options) (*Cache, error) {
	if o.TXT == nil {
		return nil, errors.New("mtasts: a TXT lookup function is required")
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	c := &Cache{opts: o, log: o.Logger, now: o.Now, entries: map[string]*entry{}, failed: map[string]time.Time{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second}).DialContext
	}
	c.client = &http.Client{
		Timeout: fetchTimeout,
		Transport: &http.Transport{
			DialContext:         dial,
			TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 30 * time.Second,
			Proxy:               nil, // never a proxy from the environment
			MaxIdleConns:        10,
			IdleConnTimeout:     30 * time.Second,
		},
		// RFC 8461 3.3: HTTP 3xx redirects MUST NOT be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if o.Dir != "" {
		c.load()
	}
	return c, nil
}

func (c *Cache) load() {
	b, err := os.ReadFile(filepath.Join(c.opts.Dir, cacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var m map[string]*entry
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		c.log.Warn("mta-sts: cache file unreadable, policies will be fetched again", "file", filepath.Join(c.opts.Dir, cacheFile), "err", err)
		return
	}
	now := c.now()
	for d, e := range m {
		if e != nil && e.Expires.After(now) && len(c.entries) < c.opts.MaxEntries {
			c.entries[strings.ToLower(d)] = e
		}
	}
}

// save writes the cache atomically (temporary file, rename).
func (c *Cache) save() {
	if c.opts.Dir == "" {
		return
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	b, err := json.Marshal(c.entries)
	c.mu.Unlock()
	if err == nil {
		err = os.MkdirAll(c.opts.Dir, 0o700)
	}
	if err == nil {
		err = atomicfile.Write(filepath.Join(c.opts.Dir, cacheFile), b, 0o600)
	}
	if err != nil {
		c.log.Warn("mta-sts: saving the policy cache", "err", err)
	}
}

// Policy returns the policy that applies to mail for domain, and false
// when none does (no policy, mode none, or no policy could be had). It
// never fails: RFC 8461 5 delivers as without MTA-STS when no valid policy
// is known, and keeps using a cached one while the TXT lookup or the
// fetch fails (RFC 8461 5.1, 10.2).
func (c *Cache) Policy(ctx context.Context, domain string) (Policy, bool) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	now := c.now()
	c.mu.Lock()
	e := c.entries[domain]
	if e != nil && !e.Expires.After(now) {
		delete(c.entries, domain)
		e = nil
	}
	var cached *entry
	if e != nil {
		cp := *e
		cached = &cp
	}
	c.mu.Unlock()

	use := func(e *entry) (Policy, bool) {
		if e == nil || e.Policy.Mode == None {
			return Policy{}, false
		}
		return e.Policy, true
	}
	// RFC 8461 3.1: the TXT record says whether there is a policy and
	// which version; a changed id means a new policy to fetch.
	txts, err := c.opts.TXT(ctx, "_mta-sts."+domain)
	if err != nil {
		c.log.Debug("mta-sts: TXT lookup failed", "domain", domain, "err", err)
		return use(cached)
	}
	var id string
	var found int
	for _, t := range txts {
		if !strings.HasPrefix(t, "v=STSv1") {
			continue // other TXT records at the name are not ours
		}
		found++
		if id, err = ParseTXT(t); err != nil {
			c.log.Info("mta-sts: bad TXT record", "domain", domain, "err", err)
		}
	}
	if found != 1 || err != nil {
		// RFC 8461 3.1: none, or more than one, is no policy record; a
		// cached unexpired policy still applies (5.1).
		return use(cached)
	}
	if cached != nil && cached.ID == id {
		return use(cached)
	}
	c.mu.Lock()
	until, failed := c.failed[domain]
	c.mu.Unlock()
	if failed && now.Before(until) {
		return use(cached)
	}
	p, err := c.fetch(ctx, domain)
	if err != nil {
		c.log.Info("mta-sts: policy fetch failed", "domain", domain, "err", err)
		c.mu.Lock()
		if len(c.failed) >= c.opts.MaxEntries {
			clear(c.failed)
		}
		c.failed[domain] = now.Add(retryFailed)
		c.mu.Unlock()
		return use(cached)
	}
	ne := &entry{ID: id, Policy: p, Expires: now.Add(p.MaxAge)}
	c.mu.Lock()
	c.put(domain, ne)
	delete(c.failed, domain)
	c.mu.Unlock()
	c.save()
	c.log.Info("mta-sts: policy fetched", "domain", domain, "id", id, "mode", string(p.Mode), "mx", strings.Join(p.MX, ","), "max_age", p.MaxAge)
	return use(ne)
}

// put stores an entry, evicting the one that expires first when full.
// c.mu is held.
func (c *Cache) put(domain string, e *entry) {
	if _, ok := c.entries[domain]; !ok && len(c.entries) >= c.opts.MaxEntries {
		var oldest string
		for d, x := range c.entries {
			if oldest == "" || x.Expires.Before(c.entries[oldest].Expires) {
				oldest = d
			}
		}
		delete(c.entries, oldest)
	}
	c.entries[domain] = e
}

// Len is the number of cached entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// fetch gets and parses the policy file (RFC 8461 3.3): HTTPS with a
// certificate valid for mta-sts.DOMAIN, status 200, text/plain, no
// redirects.
func (c *Cache) fetch(ctx context.Context, domain string) (Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Policy{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return Policy{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Policy{}, fmt.Errorf("%s: HTTP status %d", url, resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return Policy{}, fmt.Errorf("%s: content type %q, want text/plain", url, resp.Header.Get("Content-Type"))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicySize+1))
	if err != nil {
		return Policy{}, err
	}
	if len(b) > maxPolicySize {
		return Policy{}, fmt.Errorf("%s: policy larger than %d bytes", url, maxPolicySize)
	}
	return Parse(b)
}

// TXTLookup adapts a resolver's TXT method (internal/resolver) to
// Options.TXT: a name that does not exist has no records.
func TXTLookup(r interface {
	TXT(ctx context.Context, name string) ([]string, resolver.Info, error)
}) func(ctx context.Context, name string) ([]string, error) {
	return func(ctx context.Context, name string) ([]string, error) {
		recs, _, err := r.TXT(ctx, name)
		if errors.Is(err, resolver.ErrNotFound) {
			return nil, nil
		}
		return recs, err
	}
}
