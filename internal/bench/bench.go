// Package bench is agua's load and attack simulator (`agua bench`): it
// drives a target mail server — agua or any other — with legitimate clients
// and attackers at once, and reports what each side got. It speaks the
// protocols on the wire and knows nothing of agua's internals, so the same
// run can measure Postfix or Dovecot.
//
// All traffic goes to the target address, normally on loopback; attackers
// spread over many loopback source addresses (127.0.0.0/8) to act as a
// botnet.
package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one run.
type Config struct {
	Target      string        // host:port for legitimate clients (SMTP MX or submission)
	Proto       string        // legitimate protocol: "smtp" (default), "submission" (STARTTLS + AUTH), "pop3" or "imap"
	TLS         bool          // pop3/imap: upgrade with STLS/STARTTLS first
	MaxFetch    int           // pop3/imap: messages fetched per session at most (default 20)
	Duration    time.Duration // how long to run
	Legit       int           // concurrent legitimate clients (0 = none)
	LegitSrc    []netip.Addr  // their source addresses, round-robin (none: drawn from LegitPool)
	LegitPool   netip.Prefix  // where legitimate clients come from when LegitSrc is empty (sources.go); default DefaultLegitPool
	PerSession  int           // messages per legitimate session (>= 1)
	MaxSessions int           // sessions per legitimate client, then it stops (0 = until the end of the run)
	LegitRate   int           // legitimate sessions started per second, all clients together (0 = back to back)
	MsgSize     int           // bytes per message body
	From, Rcpt  string        // envelope of legitimate mail; "%d" in Rcpt is the client's number (0, 1, ...)
	User, Pass  string        // login for "submission", "pop3" and "imap"; "%d" in User is the client's number
	Helo        string

	Attacks      []string     // scenario names (see Scenarios)
	AttackTarget string       // host:port attacked ("" = Target)
	TLSTarget    string       // implicit-TLS host:port for the "tls" scenario
	AttackSrc    netip.Prefix // source addresses of the attackers
	AttackConns  int          // concurrent attacker workers per scenario
	AttackRate   int          // attempts per second per scenario (0 = as fast as possible)
	HoldTimeout  time.Duration

	PID      int          // target process to sample from /proc (0 = none)
	Progress func(Report) // called about once a second with the figures so far

	sources   *legitSources    // the legitimate sessions' source addresses
	legitTick <-chan time.Time // with LegitRate: one tick per session start
}

func (c *Config) setDefaults() {
	if c.Proto == "" {
		c.Proto = "smtp"
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.PerSession <= 0 {
		c.PerSession = 1
	}
	if c.MaxFetch <= 0 {
		c.MaxFetch = 20
	}
	if c.MsgSize <= 0 {
		c.MsgSize = 2048
	}
	if c.From == "" {
		c.From = "bench@bench.example"
	}
	if c.Helo == "" {
		c.Helo = "bench.example"
	}
	if c.AttackTarget == "" {
		c.AttackTarget = c.Target
	}
	if c.AttackConns <= 0 {
		c.AttackConns = 50
	}
	if c.HoldTimeout <= 0 {
		c.HoldTimeout = 3 * time.Second
	}
	if !c.AttackSrc.IsValid() {
		c.AttackSrc = netip.MustParsePrefix("127.66.0.0/16")
	}
	if !c.LegitPool.IsValid() {
		c.LegitPool = DefaultLegitPool
	}
}

// Report is the outcome of a run (and its progress snapshots).
type Report struct {
	Elapsed      time.Duration   `json:"elapsed"`
	Legit        LegitReport     `json:"legit"`
	LegitSources LegitSources    `json:"legit_sources"`
	Attacks      []AttackReport  `json:"attacks,omitempty"`
	Resource     *ResourceReport `json:"resources,omitempty"`
}

// LegitReport is what the legitimate clients got.
type LegitReport struct {
	Sessions     int64            `json:"sessions"`
	OK           int64            `json:"ok"`
	Messages     int64            `json:"messages"` // messages acknowledged with 250
	SessionsPerS float64          `json:"sessions_per_s"`
	MessagesPerS float64          `json:"messages_per_s"`
	SuccessPct   float64          `json:"success_pct"`
	P50          time.Duration    `json:"p50"`
	P99          time.Duration    `json:"p99"`
	Max          time.Duration    `json:"max"`
	Failures     map[string]int64 `json:"failures,omitempty"` // by cause
	// Timeline is each second of the run (by when a session ended):
	// how many ended well, their p99 and max, so that a stall (a
	// periodic save, a GC) shows as the second it happened in.
	Timeline []SecondReport `json:"timeline,omitempty"`
}

// SecondReport is one second of a LegitReport's timeline.
type SecondReport struct {
	Second int           `json:"second"`
	OK     int           `json:"ok"`
	P99    time.Duration `json:"p99"`
	Max    time.Duration `json:"max"`
}

// AttackReport is what one scenario's attackers got.
type AttackReport struct {
	Scenario  string           `json:"scenario"`
	Source    string           `json:"source"` // the attackers' prefix
	Attempts  int64            `json:"attempts"`
	PerS      float64          `json:"attempts_per_s"`
	Outcomes  map[string]int64 `json:"outcomes"` // served, refused, dropped, held, dial_failed, ...
	MaxHeld   int64            `json:"max_held,omitempty"`
	Addresses int              `json:"addresses"`
}

// counter is a concurrency-safe map of named counts.
type counter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *counter) add(k string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[k]++
	c.mu.Unlock()
}

func (c *counter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// legitStats accumulates legitimate results.
type legitStats struct {
	sessions, ok, messages atomic.Int64
	failures               counter
	mu                     sync.Mutex
	start                  time.Time
	lat                    []time.Duration
	ends                   []time.Duration // since start, parallel to lat
}

const maxSamples = 1 << 20

func (s *legitStats) record(d time.Duration, msgs int, cause string) {
	s.sessions.Add(1)
	s.messages.Add(int64(msgs))
	if cause != "" {
		s.failures.add(cause)
		return
	}
	s.ok.Add(1)
	s.mu.Lock()
	if len(s.lat) < maxSamples {
		s.lat = append(s.lat, d)
		s.ends = append(s.ends, time.Since(s.start))
	}
	s.mu.Unlock()
}

func (s *legitStats) report(elapsed time.Duration) LegitReport {
	r := LegitReport{Sessions: s.sessions.Load(), OK: s.ok.Load(), Messages: s.messages.Load(), Failures: s.failures.snapshot()}
	secs := elapsed.Seconds()
	if secs > 0 {
		r.SessionsPerS = float64(r.Sessions) / secs
		r.MessagesPerS = float64(r.Messages) / secs
	}
	if r.Sessions > 0 {
		r.SuccessPct = 100 * float64(r.OK) / float64(r.Sessions)
	}
	s.mu.Lock()
	lat := append([]time.Duration(nil), s.lat...)
	r.Timeline = timeline(s.lat, s.ends)
	s.mu.Unlock()
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		r.Max = lat[len(lat)-1]
	}
	return r
}

// timeline groups latencies by the second their session ended in.
func timeline(lat, ends []time.Duration) []SecondReport {
	var secs [][]time.Duration
	for i, d := range lat {
		k := int(ends[i] / time.Second)
		for len(secs) <= k {
			secs = append(secs, nil)
		}
		secs[k] = append(secs[k], d)
	}
	out := make([]SecondReport, 0, len(secs))
	for k, l := range secs {
		r := SecondReport{Second: k, OK: len(l)}
		if len(l) > 0 {
			sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
			r.P99 = l[min(len(l)-1, len(l)*99/100)]
			r.Max = l[len(l)-1]
		}
		out = append(out, r)
	}
	return out
}

type attackStats struct {
	name     string
	attempts atomic.Int64
	held     atomic.Int64
	maxHeld  atomic.Int64
	outcomes counter
	addrs    int
	source   string
}

func (a *attackStats) report(elapsed time.Duration) AttackReport {
	r := AttackReport{Scenario: a.name, Attempts: a.attempts.Load(), Outcomes: a.outcomes.snapshot(), MaxHeld: a.maxHeld.Load(), Addresses: a.addrs, Source: a.source}
	if s := elapsed.Seconds(); s > 0 {
		r.PerS = float64(r.Attempts) / s
	}
	return r
}

// Run executes the benchmark until cfg.Duration has passed or ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	for _, a := range cfg.Attacks {
		if _, ok := Scenarios[a]; !ok {
			return nil, fmt.Errorf("unknown attack scenario %q (have %s)", a, scenarioNames())
		}
	}
	if cfg.LegitRate < 0 || cfg.LegitRate > 1_000_000 {
		return nil, fmt.Errorf("legitimate session rate %d/s: want 0 (back to back) to 1000000", cfg.LegitRate)
	}
	if cfg.Legit == 0 && len(cfg.Attacks) == 0 {
		return nil, fmt.Errorf("nothing to do: set legitimate clients and/or attacks")
	}
	if cfg.Target == "" {
		return nil, fmt.Errorf("no target address")
	}
	switch cfg.Proto {
	case "smtp", "submission":
	case "pop3", "imap":
		if cfg.Legit > 0 && (cfg.User == "" || cfg.Pass == "") {
			return nil, fmt.Errorf("-proto %s needs -user and -pass", cfg.Proto)
		}
	default:
		return nil, fmt.Errorf("unknown protocol %q (smtp, submission, pop3, imap)", cfg.Proto)
	}
	if err := checkLegitSources(&cfg); err != nil {
		return nil, err
	}
	cfg.sources = newLegitSources(&cfg, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13)))
	if cfg.Legit > 0 {
		if err := probe(ctx, &cfg); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	legit := &legitStats{start: time.Now()}
	var attacks []*attackStats
	var wg sync.WaitGroup
	var sampler *resourceSampler
	if cfg.PID > 0 {
		sampler = newResourceSampler(cfg.PID)
	}
	if cfg.LegitRate > 0 {
		// A burst of logins arriving at a set pace (1,000 in 10 s), not as
		// fast as the server answers. A tick nobody waits for is lost, so
		// a server slower than the pace lowers it.
		t := time.NewTicker(time.Second / time.Duration(cfg.LegitRate))
		defer t.Stop()
		cfg.legitTick = t.C
	}
	for i := 0; i < cfg.Legit; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runLegit(ctx, &cfg, i, legit)
		}()
	}
	for _, name := range cfg.Attacks {
		st := &attackStats{name: name, source: cfg.AttackSrc.String()}
		attacks = append(attacks, st)
		src := newAddrPool(cfg.AttackSrc)
		st.addrs = src.size()
		var limiter <-chan time.Time
		if cfg.AttackRate > 0 {
			t := time.NewTicker(time.Second / time.Duration(cfg.AttackRate))
			defer t.Stop()
			limiter = t.C
		}
		for w := 0; w < cfg.AttackConns; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runAttacker(ctx, &cfg, Scenarios[name], src, st, limiter)
			}()
		}
	}
	snapshot := func() Report {
		el := time.Since(start)
		r := Report{Elapsed: el, Legit: legit.report(el), LegitSources: cfg.sources.report()}
		for _, a := range attacks {
			r.Attacks = append(r.Attacks, a.report(el))
		}
		if sampler != nil {
			r.Resource = sampler.report()
		}
		return r
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-tick.C:
			if sampler != nil {
				sampler.sample()
			}
			if cfg.Progress != nil {
				cfg.Progress(snapshot())
			}
		case <-done:
			break loop
		}
	}
	if sampler != nil {
		sampler.sample()
	}
	r := snapshot()
	return &r, nil
}

// addrPool hands out source addresses from a prefix, every one in turn.
// In a prefix of several /24s consecutive addresses lie in different /24s,
// bit-reversed so that they also lie in different /16s: a botnet's
// concurrent attackers sit in many networks at once (in every /16 of a /10),
// not in the first /24 of the range. .0 and .255 are never used.
type addrPool struct {
	base netip.Addr
	n    uint64 // addresses in the prefix (at most 2^24)
	nets uint64 // /24s in it, when n >= 512; else 0
	bits int    // log2(nets)
	next atomic.Uint64
}

func newAddrPool(p netip.Prefix) *addrPool {
	hostBits := p.Addr().BitLen() - p.Bits()
	n := uint64(1)
	if hostBits > 0 {
		n = uint64(1) << min(hostBits, 24)
	}
	a := &addrPool{base: p.Masked().Addr(), n: n}
	if n >= 512 {
		a.nets, a.bits = n/256, bits.Len64(n/256)-1
	}
	return a
}

func (a *addrPool) size() int {
	if a.nets > 0 {
		return int(a.nets * 254)
	}
	return int(a.n)
}

// get returns the next address.
func (a *addrPool) get() netip.Addr {
	if a.nets > 0 {
		return a.at(a.next.Add(1) - 1)
	}
	for {
		off := a.next.Add(1) % a.n
		if a.n <= 2 || off != 0 && off != a.n-1 {
			return a.offset(off)
		}
	}
}

// at returns the j-th address of the spread order (pools of several /24s).
func (a *addrPool) at(j uint64) netip.Addr {
	j %= a.nets * 254
	net := bits.Reverse64(j%a.nets) >> (64 - a.bits)
	return a.offset(net*256 + 1 + j/a.nets)
}

func (a *addrPool) offset(off uint64) netip.Addr {
	b := a.base.As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+off)
	addr := netip.AddrFrom16(b)
	if a.base.Is4() {
		addr = addr.Unmap()
	}
	return addr
}

// dialFrom connects from src. The connection is closed when ctx ends, so
// no session outlives the run whatever it is blocked on.
func dialFrom(ctx context.Context, src netip.Addr, target string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	return &runConn{Conn: c, stop: context.AfterFunc(ctx, func() { c.Close() })}, nil
}

// runConn is a connection tied to the run's context.
type runConn struct {
	net.Conn
	stop func() bool
}

func (c *runConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
