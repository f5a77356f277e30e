// Package resolver is agua's DNS stub resolver, shared by outbound delivery
// (MX, A/AAAA, TLSA) and inbound sender checks (TXT for SPF/DKIM/DMARC, PTR).
//
// It sends recursive queries (RFC 1035) with github.com/miekg/dns to the
// configured upstream resolvers, or to those of /etc/resolv.conf, falls back
// to TCP when an answer is truncated (RFC 7766), and asks for the AD bit
// (RFC 6840 5.7) so callers such as DANE (RFC 7672) can tell whether the
// upstream validated the answer with DNSSEC. It does no validation itself:
// the AD bit is only as trustworthy as the path to the upstream (RFC 4035
// 4.9.3), which is why the default upstream is the local machine's.
//
// Answers are cached in a bounded LRU table for their TTL (capped), and
// "no such name" and "no such record" answers for the negative TTL of the
// zone's SOA (RFC 2308 5). Server failures and timeouts are not cached;
// they come back as errors matching ErrTemporary, so a caller can defer
// instead of deciding on a missing answer. Concurrent identical lookups
// share one query.
package resolver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Errors that decide behaviour. A lookup error matches exactly one of them
// with errors.Is, and is a *Error carrying the details.
var (
	// ErrNotFound: the name does not exist (NXDOMAIN, RFC 1035 4.1.1).
	// A name that exists without records of the asked type is not an
	// error: the lookup returns no records.
	ErrNotFound = errors.New("resolver: no such domain")
	// ErrTemporary: no usable answer now (timeout, SERVFAIL, REFUSED,
	// network error); asking again later may work.
	ErrTemporary = errors.New("resolver: temporary failure")
	// ErrPermanent: the answer is unusable for good (a malformed name,
	// FORMERR, NOTIMP).
	ErrPermanent = errors.New("resolver: permanent failure")
)

// Error describes a failed lookup.
type Error struct {
	Name  string // the name looked up
	Type  string // the record type, "MX", "A", ...
	Rcode int    // the DNS response code, -1 when there was no answer
	Err   error  // ErrNotFound, ErrTemporary or ErrPermanent
	Cause error  // the underlying network error, if any
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %v", e.Type, e.Name, e.Err)
	if e.Rcode >= 0 && e.Rcode != dns.RcodeSuccess {
		s += " (" + dns.RcodeToString[e.Rcode] + ")"
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Is matches the sentinel kind of the error.
func (e *Error) Is(target error) bool { return target == e.Err }

// Unwrap returns the network cause, if any.
func (e *Error) Unwrap() error { return e.Cause }

// Info describes where an answer came from.
type Info struct {
	// Authentic is the AD bit of the upstream's answer: the upstream
	// validated it with DNSSEC (RFC 4035 3.2.3). False for an answer
	// that was not validated or came from an insecure zone.
	Authentic bool
	// Cached is true when the answer came from the cache.
	Cached bool
}

// Config configures a Resolver. Zero values take the defaults.
type Config struct {
	// Servers are the upstream resolvers (host:port, or a host for port
	// 53), asked in order. Empty: the nameservers of ResolvConf.
	Servers []string
	// ResolvConf is read when Servers is empty. Default /etc/resolv.conf.
	ResolvConf string
	// Timeout bounds one query to one server. Default 5s.
	Timeout time.Duration
	// Attempts is how many times the server list is tried. Default 2.
	Attempts int
	// CacheSize is the most answers kept. Default 10000; negative: no cache.
	CacheSize int
	// MaxTTL caps how long a positive answer is cached. Default 1h.
	MaxTTL time.Duration
	// MaxNegativeTTL caps how long a negative answer is cached. Default 15m.
	MaxNegativeTTL time.Duration
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Defaults.
const (
	DefaultTimeout        = 5 * time.Second
	DefaultAttempts       = 2
	DefaultCacheSize      = 10000
	DefaultMaxTTL         = time.Hour
	DefaultMaxNegativeTTL = 15 * time.Minute
	defaultResolvConf     = "/etc/resolv.conf"
	// ednsSize is the EDNS0 buffer size announced (DNS flag day 2020:
	// no fragmentation).
	ednsSize = 1232
)

// Resolver answers DNS lookups. It is safe for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	maxTTL   time.Duration
	maxNeg   time.Duration
	now      func() time.Time
	cache    *cache

	mu       sync.Mutex
	inflight map[cacheKey]*call
}

// call is one query in flight that concurrent identical lookups wait for.
type call struct {
	done chan struct{}
	ans  *answer
	err  error
}

// New returns a Resolver. It fails when no upstream is configured and
// none can be read from the resolv.conf file.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{
		timeout:  cfg.Timeout,
		attempts: cfg.Attempts,
		maxTTL:   cfg.MaxTTL,
		maxNeg:   cfg.MaxNegativeTTL,
		now:      cfg.Now,
		inflight: map[cacheKey]*call{},
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.attempts <= 0 {
		r.attempts = DefaultAttempts
	}
	if r.maxTTL <= 0 {
		r.maxTTL = DefaultMaxTTL
	}
	if r.maxNeg <= 0 {
		r.maxNeg = DefaultMaxNegativeTTL
	}
	if r.now == nil {
		r.now = time.Now
	}
	switch {
	case cfg.CacheSize == 0:
		r.cache = newCache(DefaultCacheSize)
	case cfg.CacheSize > 0:
		r.cache = newCache(cfg.CacheSize)
	}
	for _, s := range cfg.Servers {
		r.servers = append(r.servers, withPort(s))
	}
	if len(r.servers) == 0 {
		path := cfg.ResolvConf
		if path == "" {
			path = defaultResolvConf
		}
		cc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("resolver: no servers configured and %w", err)
		}
		for _, s := range cc.Servers {
			r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
		}
		if len(r.servers) == 0 {
			return nil, fmt.Errorf("resolver: no nameserver in %s", path)
		}
	}
	return r, nil
}

// Servers returns the upstreams in the order they are asked.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

func withPort(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "53")
}

// MX is one mail exchanger.
type MX struct {
	Host string // without the trailing dot; "" for a null MX's "."
	Pref uint16
}

// MX looks up the mail exchangers of domain, in the order received; the
// caller sorts by preference (RFC 5321 5.1).
func (r *Resolver) MX(ctx context.Context, domain string) ([]MX, Info, error) {
	ans, info, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, info, err
	}
	var out []MX
	for _, rr := range ans.rrs {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, MX{Host: strings.TrimSuffix(mx.Mx, "."), Pref: mx.Preference})
		}
	}
	return out, info, nil
}

// A looks up the IPv4 addresses of host.
func (r *Resolver) A(ctx context.Context, host string) ([]netip.Addr, Info, error) {
	return r.addrs(ctx, host, dns.TypeA)
}

// AAAA looks up the IPv6 addresses of host.
func (r *Resolver) AAAA(ctx context.Context, host string) ([]netip.Addr, Info, error) {
	return r.addrs(ctx, host, dns.TypeAAAA)
}

// IP looks up both A and AAAA records of host, concurrently, IPv6 first.
// It fails only when both lookups fail; Authentic only when both were.
func (r *Resolver) IP(ctx context.Context, host string) ([]netip.Addr, Info, error) {
	type res struct {
		ips  []netip.Addr
		info Info
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		ips, info, err := r.A(ctx, host)
		ch <- res{ips, info, err}
	}()
	v6, info6, err6 := r.AAAA(ctx, host)
	v4 := <-ch
	if err6 != nil && v4.err != nil {
		// A definite "no such name" wins over a temporary error only
		// when both say so; otherwise report the temporary one.
		if errors.Is(v4.err, ErrTemporary) {
			return nil, Info{}, v4.err
		}
		return nil, Info{}, err6
	}
	info := Info{Authentic: info6.Authentic && v4.info.Authentic, Cached: info6.Cached && v4.info.Cached}
	if err6 != nil {
		info = v4.info
	} else if v4.err != nil {
		info = info6
	}
	return append(v6, v4.ips...), info, nil
}

func (r *Resolver) addrs(ctx context.Context, host string, t uint16) ([]netip.Addr, Info, error) {
	ans, info, err := r.lookup(ctx, host, t)
	if err != nil {
		return nil, info, err
	}
	var out []netip.Addr
	for _, rr := range ans.rrs {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, info, nil
}

// TXT looks up the TXT records of name, each record's strings joined
// (RFC 7208 3.3).
func (r *Resolver) TXT(ctx context.Context, name string) ([]string, Info, error) {
	ans, info, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, info, err
	}
	var out []string
	for _, rr := range ans.rrs {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out, info, nil
}

// TLSA is one TLSA record (RFC 6698 2.1).
type TLSA struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
}

// TLSA looks up the TLSA records of a port and host ("_25._tcp.HOST",
// RFC 7672 2.2). Callers must use them only when Info.Authentic is true.
func (r *Resolver) TLSA(ctx context.Context, port int, host string) ([]TLSA, Info, error) {
	name := fmt.Sprintf("_%d._tcp.%s", port, host)
	ans, info, err := r.lookup(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil, info, err
	}
	var out []TLSA
	for _, rr := range ans.rrs {
		if t, ok := rr.(*dns.TLSA); ok {
			data, err := hex.DecodeString(t.Certificate)
			if err != nil {
				continue
			}
			out = append(out, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
		}
	}
	return out, info, nil
}

// PTR looks up the names of an address (RFC 1035 3.5, RFC 3596 2.5).
func (r *Resolver) PTR(ctx context.Context, addr netip.Addr) ([]string, Info, error) {
	name, err := dns.ReverseAddr(addr.Unmap().String())
	if err != nil {
		return nil, Info{}, &Error{Name: addr.String(), Type: "PTR", Rcode: -1, Err: ErrPermanent, Cause: err}
	}
	ans, info, err := r.lookup(ctx, name, dns.TypePTR)
	if err != nil {
		return nil, info, err
	}
	var out []string
	for _, rr := range ans.rrs {
		if p, ok := rr.(*dns.PTR); ok {
			out = append(out, strings.TrimSuffix(p.Ptr, "."))
		}
	}
	return out, info, nil
}

// lookup answers from the cache or asks the upstreams, sharing a query
// with concurrent identical lookups.
func (r *Resolver) lookup(ctx context.Context, name string, t uint16) (*answer, Info, error) {
	tname := dns.TypeToString[t]
	fqdn := dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(fqdn); !ok || name == "" || !printable(name) {
		return nil, Info{}, &Error{Name: name, Type: tname, Rcode: -1, Err: ErrPermanent}
	}
	key := cacheKey{fqdn, t}
	if r.cache != nil {
		if a, ok := r.cache.get(key, r.now()); ok {
			return a.result(name, tname, true)
		}
	}
	// A Breaker (Guarded) sends nothing while the upstreams are silent.
	b := breakerOf(ctx)
	probe := false
	if b != nil {
		var ok bool
		if ok, probe = b.allow(); !ok {
			return nil, Info{}, &Error{Name: name, Type: tname, Rcode: -1, Err: ErrTemporary, Cause: ErrCircuitOpen}
		}
	}
	ans, info, err := r.lookupShared(ctx, key, name, tname, t)
	if b != nil {
		var re *Error
		silent := errors.As(err, &re) && re.Rcode == -1 && re.Err == ErrTemporary
		if silent && errors.Is(err, context.Canceled) {
			b.abandon(probe) // the caller gave up: no verdict
		} else {
			b.record(probe, !silent)
		}
	}
	return ans, info, err
}

// lookupShared sends the query, or waits for the same one in flight.
func (r *Resolver) lookupShared(ctx context.Context, key cacheKey, name, tname string, t uint16) (*answer, Info, error) {
	fqdn := key.name
	r.mu.Lock()
	if c, ok := r.inflight[key]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, Info{}, &Error{Name: name, Type: tname, Rcode: -1, Err: ErrTemporary, Cause: ctx.Err()}
		}
		if c.err != nil {
			return nil, Info{}, c.err
		}
		return c.ans.result(name, tname, false)
	}
	c := &call{done: make(chan struct{})}
	r.inflight[key] = c
	r.mu.Unlock()

	ans, err := r.query(ctx, fqdn, t)
	if err != nil {
		c.err = &Error{Name: name, Type: tname, Rcode: -1, Err: ErrTemporary, Cause: err}
	} else {
		c.ans = ans
		if r.cache != nil && ans.expires.After(r.now()) {
			r.cache.put(key, ans)
		}
	}
	r.mu.Lock()
	delete(r.inflight, key)
	r.mu.Unlock()
	close(c.done)
	if c.err != nil {
		return nil, Info{}, c.err
	}
	return ans.result(name, tname, false)
}

// answer is what the cache keeps of a response: the records of the asked
// type, or the negative rcode.
type answer struct {
	rcode     int
	rrs       []dns.RR
	authentic bool
	expires   time.Time
}

func (a *answer) result(name, tname string, cached bool) (*answer, Info, error) {
	info := Info{Authentic: a.authentic, Cached: cached}
	switch a.rcode {
	case dns.RcodeSuccess:
		return a, info, nil
	case dns.RcodeNameError:
		return nil, info, &Error{Name: name, Type: tname, Rcode: a.rcode, Err: ErrNotFound}
	case dns.RcodeServerFailure, dns.RcodeRefused:
		return nil, info, &Error{Name: name, Type: tname, Rcode: a.rcode, Err: ErrTemporary}
	default:
		return nil, info, &Error{Name: name, Type: tname, Rcode: a.rcode, Err: ErrPermanent}
	}
}

// query asks the upstreams in order, Attempts times round, until one gives
// a usable answer. A SERVFAIL or REFUSED moves on to the next server; when
// all fail that way the last such answer is returned (uncached).
func (r *Resolver) query(ctx context.Context, fqdn string, t uint16) (*answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, t)
	m.RecursionDesired = true
	// RFC 6840 5.7: AD in a query asks for the AD bit in the answer.
	m.AuthenticatedData = true
	m.SetEdns0(ednsSize, false)

	var lastErr error
	var lastFail *answer
	for range r.attempts {
		for _, srv := range r.servers {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			resp, err := r.exchange(ctx, m, srv)
			if err != nil {
				lastErr = err
				continue
			}
			if resp.Id != m.Id || len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, fqdn) || resp.Question[0].Qtype != t {
				lastErr = fmt.Errorf("answer from %s does not match the question", srv)
				continue
			}
			a := r.parse(resp, t)
			if a.rcode == dns.RcodeServerFailure || a.rcode == dns.RcodeRefused {
				lastFail = a
				continue
			}
			return a, nil
		}
	}
	if lastFail != nil {
		return lastFail, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no servers")
	}
	return nil, lastErr
}

func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, srv string) (*dns.Msg, error) {
	qctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: ednsSize}
	resp, _, err := c.ExchangeContext(qctx, m, srv)
	if err == nil && resp.Truncated {
		// RFC 7766 5: a truncated UDP answer is asked again over TCP.
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(qctx, m, srv)
	}
	return resp, err
}

// parse turns a response into a cache entry with its expiry.
func (r *Resolver) parse(resp *dns.Msg, t uint16) *answer {
	now := r.now()
	a := &answer{rcode: resp.Rcode, authentic: resp.AuthenticatedData}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		a.expires = now // failures are not cached
		return a
	}
	ttl := r.maxTTL
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype != t {
			continue // CNAMEs and DNAMEs of the chain
		}
		a.rrs = append(a.rrs, rr)
		if d := time.Duration(rr.Header().Ttl) * time.Second; d < ttl {
			ttl = d
		}
	}
	if len(a.rrs) == 0 {
		// RFC 2308 5: a negative answer is cached for the lesser of the
		// SOA's TTL and its MINIMUM field; without a SOA, not at all.
		ttl = 0
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
				break
			}
		}
		ttl = min(ttl, r.maxNeg)
	}
	a.expires = now.Add(ttl)
	return a
}

// printable reports whether name is visible ASCII: DNS names on the wire
// are A-labels (RFC 5890), and control bytes have no place in a lookup.
func printable(name string) bool {
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] >= 0x7f {
			return false
		}
	}
	return true
}
