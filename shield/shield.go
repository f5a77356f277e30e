package shield

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/gaissmai/bart"
)

// Options are the parts of a Shield that are not configuration.
type Options struct {
	Logger   *slog.Logger     // nil = slog.Default()
	StateDir string           // where the default LocalStore persists bans, offender history and known-good addresses (JSON, atomic write, every SaveInterval and on Close), and where the event history lives; "" = no persistence
	Now      func() time.Time // clock; nil = time.Now
	// Store holds the state several nodes share (bans, offenders,
	// known-good, lockdown, and behaviour counters that add up across
	// nodes); nil = a LocalStore on StateDir, which the Shield opens and
	// closes, and counts alone. A Store given here is flushed by Close,
	// not closed. See StateStore.
	Store StateStore
	// Node names this node in the bans it issues (BanInfo.Node), so an
	// operator of several nodes sees which one banned; "" = unnamed.
	Node string
	// KernelNetNS is the network namespace (a path such as
	// /run/netns/NAME) the kernel offload writes its nftables table in;
	// "" = the process's own.
	KernelNetNS string
}

// Shield is the defence layer. One Shield serves any number of listeners
// and HTTP handlers; per-address and per-prefix state is shared between them.
type Shield struct {
	config   atomic.Pointer[Config] // replaced whole by Reconfigure; never modified in place
	log      *slog.Logger
	now      func() time.Time
	stateDir string
	node     string

	pol       atomic.Pointer[policy]
	rules     atomic.Pointer[[]eventRule] // by Event; rebuilt when an event registered after New is first reported
	rulesMu   sync.Mutex
	bans      atomic.Pointer[bart.Table[*ban]] // immutable snapshot, replaced by writers under banMu
	banMu     sync.Mutex
	issued    map[string]uint64 // bans issued by reason, under banMu
	dropped   uint64            // bans not issued because the table was full, under banMu
	lastSweep time.Time         // under banMu

	ips       *lru[netip.Addr, ipState]
	prefixes  *lru[netip.Prefix, prefixState]
	offenders *lru[netip.Prefix, offender]
	knownGood *netTable[int64]           // until, unix nanoseconds
	rep       reputation                 // SetReputation
	repAddrs  *lru[netip.Addr, repRec]   // reputation score per address (score.go)
	repNets   *lru[netip.Prefix, repRec] // and per network
	repSrc    repSource                  // SetScoreSource
	accounts  *lru[string, accountState]

	lockdown atomic.Bool
	kern     *kernel // [shield.kernel]; nil when off

	store        StateStore
	ownStore     bool // opened by New, closed by Close
	stopWatch    func()
	storeQ       chan storeOp
	storeDropped atomic.Uint64 // writes dropped because the queue was full
	storeErrors  atomic.Uint64
	storeLogMu   sync.Mutex
	storeLogged  time.Time     // last "shield store write failed" line
	counts       *sharedCounts // behaviour counted across nodes; nil without a shared store

	lnMu      sync.Mutex
	listeners []*listener
	stats     map[string]*listenerStats

	tarpitHeld     atomic.Int64
	tarpitMu       sync.Mutex
	tarpits        map[*tarpitConn]struct{}
	pendingRejects atomic.Int64
	connIDs        atomic.Uint64

	agg  *aggregator
	act  *activity
	hist *history

	reloadMu      sync.Mutex
	reloadsOK     atomic.Uint64
	reloadsFailed atomic.Uint64
	watcher       *fsnotify.Watcher

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// New validates cfg, loads the rules (an error names every bad line as
// file:line: reason), restores state from opts.StateDir and starts watching
// the rule files.
func New(cfg Config, opts Options) (*Shield, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("shield config: %w", errors.Join(errs...))
	}
	cfg.Thresholds = maps.Clone(cfg.Thresholds) // the caller's map may change later
	cfg.Reputation.Weights = maps.Clone(cfg.Reputation.Weights)
	s := &Shield{
		log:      opts.Logger,
		now:      opts.Now,
		stateDir: opts.StateDir,
		node:     opts.Node,
		issued:   make(map[string]uint64),
		stats:    make(map[string]*listenerStats),
		tarpits:  make(map[*tarpitConn]struct{}),
		closed:   make(chan struct{}),
	}
	s.config.Store(&cfg)
	rules := compileRules(s.cfg())
	s.rules.Store(&rules)
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	n := cfg.TableSize
	s.ips = newLRU[netip.Addr, ipState](n, hashAddr)
	s.ips.keep = func(v *ipState) bool { return v.conns > 0 }
	s.prefixes = newLRU[netip.Prefix, prefixState](n, hashPrefix)
	s.prefixes.keep = func(v *prefixState) bool { return v.conns > 0 }
	s.offenders = newLRU[netip.Prefix, offender](n, hashPrefix)
	s.knownGood = newNetTable[int64](n)
	s.accounts = newLRU[string, accountState](n, hashString)
	s.newRepTables(n)
	s.bans.Store(new(bart.Table[*ban]))
	s.agg = newAggregator(s.now)
	s.agg.netOf = s.netPrefix
	s.act = newActivity(s.now)
	s.hist = newHistory(s.cfg(), s.log)
	s.lockdown.Store(cfg.Lockdown)

	p, err := compilePolicy(s.cfg())
	if err != nil {
		return nil, fmt.Errorf("shield rules: %w", err)
	}
	s.pol.Store(p)
	if err := s.openStore(opts); err != nil {
		return nil, err
	}
	if err := s.openKernel(s.cfg(), opts.KernelNetNS); err != nil {
		close(s.closed) // stops the store writer
		s.wg.Wait()
		s.closeStore()
		return nil, err
	}
	s.kernelSync()
	if err := s.loadReputation(); err != nil {
		// Not fatal: scores are rebuilt from behaviour; bans do not depend on them.
		s.log.Error("shield reputation not loaded", "err", err)
	}
	if s.stateDir != "" {
		if err := s.hist.open(histPath(s.stateDir), s.now()); err != nil {
			// Not fatal: the history is for reports; bans do not depend on it.
			s.log.Error("shield history not loaded", "err", err)
		}
	}
	if err := s.startWatcher(); err != nil {
		// Not fatal: explicit Reload still works.
		s.log.Warn("shield watch failed", "err", err)
	}
	s.wg.Add(1)
	go s.housekeeping()
	return s, nil
}

// Close stops the watcher and housekeeping, flushes the aggregated logs,
// releases held tarpits and saves state. Listeners are closed by their owner.
func (s *Shield) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		if s.watcher != nil {
			s.watcher.Close()
		}
		s.wg.Wait()
		s.flushLogs() // folds the last counts into the history too
		s.hist.close()
		s.tarpitMu.Lock()
		for t := range s.tarpits {
			t.c.Close()
		}
		s.tarpitMu.Unlock()
		err = errors.Join(s.closeStore(), s.closeKernel(), s.saveReputation())
	})
	return err
}

// flushLogs logs the aggregated denials and folds them into the history.
func (s *Shield) flushLogs() {
	s.kernelCount(true)
	s.hist.fold(s.agg.flush(s.log, s.cfg().LogInterval), s.act.take(), s.now())
}

// housekeeping flushes logs, expires bans, folds the history and saves state
// on their intervals.
func (s *Shield) housekeeping() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastLog, lastSave, lastFold := time.Now(), time.Now(), time.Now()
	for {
		select {
		case <-s.closed:
			return
		case t := <-tick.C:
			s.expireBans(s.now())
			s.kernelSync()
			s.kernelCount(false)
			if t.Sub(lastLog) >= s.cfg().LogInterval {
				s.flushLogs()
				lastLog, lastFold = t, t
			}
			if t.Sub(lastFold) >= min(s.cfg().SaveInterval, time.Minute) {
				s.foldHistory()
				lastFold = t
			}
			if t.Sub(lastSave) >= s.cfg().SaveInterval {
				s.flushStore()
				if err := s.saveReputation(); err != nil {
					s.log.Error("shield reputation save failed", "err", err)
				}
				lastSave = t
			}
		}
	}
}

// Reload re-reads the rule files. On error the old rules stay in force and
// the error lists every bad line as file:line: reason.
func (s *Shield) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	p, err := compilePolicy(s.cfg())
	if err != nil {
		s.reloadsFailed.Add(1)
		s.log.Error("shield reload failed", "err", err)
		return err
	}
	s.log.Info("shield reload", "rules", p.size())
	s.installPolicy(p)
	return nil
}

// RuleFiles says what each rule file gave the rules in force: its lines
// and rules, or that it was missing.
func (s *Shield) RuleFiles() []RuleFile { return slices.Clone(s.pol.Load().files) }

// SetLockdown turns lockdown on or off, on every node sharing the store.
// Turning it on closes the open connections of clients that are neither
// allowlisted nor known-good, nor of a reputation at or above
// reputation.lockdown.
func (s *Shield) SetLockdown(on bool) {
	if s.setLockdown(on) {
		s.toStore(func(ctx context.Context, st StateStore) error { return st.SetLockdown(ctx, on) })
	}
}

// setLockdown turns lockdown on or off locally and reports whether it
// changed.
func (s *Shield) setLockdown(on bool) bool {
	if s.lockdown.Swap(on) == on {
		return false
	}
	s.log.Warn("shield lockdown", "on", on)
	if !on {
		return true
	}
	now := s.now().UnixNano()
	p := s.pol.Load()
	s.kick(func(c *Conn) bool {
		return !p.exempt(c.addr) && !s.isKnownGood(c.addr, now) && !s.lockdownServed(c.addr, now)
	}, nil, "lockdown")
	return true
}

// Lockdown reports whether lockdown is on.
func (s *Shield) Lockdown() bool { return s.lockdown.Load() }

// exempt reports whether addr is a trusted proxy or allowlisted.
func (p *policy) exempt(addr netip.Addr) bool {
	if p.trusted.Lookup(addr) {
		return true
	}
	r := p.lookup(addr)
	return r != nil && r.allow
}

// netPrefix returns the prefix that groups addr for per-prefix limits and
// prefix bans.
func (s *Shield) netPrefix(addr netip.Addr) netip.Prefix {
	bits := s.cfg().IPv6Prefix
	if addr.Is4() {
		bits = s.cfg().IPv4Prefix
	}
	p, _ := addr.Prefix(bits)
	return p
}

// statsFor returns the counters of a listener or middleware name.
func (s *Shield) statsFor(name string) *listenerStats {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	st := s.stats[name]
	if st == nil {
		st = new(listenerStats)
		s.stats[name] = st
	}
	return st
}

// kick closes every live connection matching match, except one.
func (s *Shield) kick(match func(*Conn) bool, except *Conn, why string) int {
	s.lnMu.Lock()
	lns := append([]*listener(nil), s.listeners...)
	s.lnMu.Unlock()
	var victims []*Conn
	for _, l := range lns {
		l.mu.Lock()
		for c := range l.conns {
			if c != except && match(c) {
				victims = append(victims, c)
			}
		}
		l.mu.Unlock()
	}
	for _, c := range victims {
		c.kick()
		c.l.stats.evicted.Add(1)
	}
	if len(victims) > 0 {
		s.log.Info("shield closed connections", "count", len(victims), "cause", why)
	}
	return len(victims)
}

// cfg returns the configuration in force. Callers read it once per
// decision: a Reconfigure between two reads may change it.
func (s *Shield) cfg() *Config { return s.config.Load() }

// unmap returns addr without IPv4-in-IPv6 mapping and without zone.
func unmap(addr netip.Addr) netip.Addr { return addr.Unmap().WithZone("") }
