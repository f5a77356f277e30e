package shield

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The history is a bounded record of what happened, for reports: per
// (address, minute) the events reported, the connections refused by source
// and action and the connections admitted, plus every ban and unban. A
// flood of 45,000 connections from one address in three minutes is three
// records. It is fed from the denial aggregator and the activity counters,
// folded in at least once a minute (and before every query), and persisted
// in the state folder as an append-only file that is compacted now and then.

// AddrHistory is what one address (or network, when the shield counted the
// network as a whole, e.g. per-prefix limits) did within a period.
type AddrHistory struct {
	Addr              netip.Prefix      `json:"addr"` // a single address as /32 or /128, or a network
	First             time.Time         `json:"first"`
	Last              time.Time         `json:"last"`
	Events            map[string]uint64 `json:"events,omitempty"` // by Event name (auth_failure, protocol_error, and the names services registered)
	Refused           []Refusal         `json:"refused,omitempty"`
	Admitted          uint64            `json:"admitted"`
	AdmittedKnownGood uint64            `json:"admitted_known_good"` // admitted while known-good
	Bans              []BanEvent        `json:"bans,omitempty"`      // bans and unbans of exactly this address or network
	Evidence          []string          `json:"evidence,omitempty"`  // a sample of aggregated log lines, times in UTC
}

// RefusedTotal is the number of refused connections.
func (a *AddrHistory) RefusedTotal() uint64 {
	var n uint64
	for _, r := range a.Refused {
		if !r.DryRun {
			n += r.Count
		}
	}
	return n
}

// Offending reports whether the address did anything a well-behaved client
// does not: an event not registered as Benign (a failed login, a protocol
// error...), a refused connection (dry runs aside) or a ban.
func (a *AddrHistory) Offending() bool {
	for name, n := range a.Events {
		if n > 0 && !benignName(name) {
			return true
		}
	}
	return a.RefusedTotal() > 0 || len(a.Bans) > 0
}

// benignName reports whether the event called name is registered as
// Benign (a success, accepted traffic).
func benignName(name string) bool {
	ev, ok := LookupEvent(name)
	return ok && ev.Behaviour().Benign
}

// Refusal counts refused connections of one decision source and action.
type Refusal struct {
	Source string `json:"source"` // "shield.rules:12", "ban:auth_failure", "limit:per_ip_rate", "capacity", "lockdown", ...
	Action Action `json:"action"`
	DryRun bool   `json:"dry_run,omitempty"` // "would block": counted, not enforced
	Count  uint64 `json:"count"`
}

// BanEvent is one ban or unban.
type BanEvent struct {
	Time   time.Time     `json:"time"`
	Kind   string        `json:"kind"` // "ban" or "unban"
	Prefix netip.Prefix  `json:"prefix"`
	Reason string        `json:"reason"`
	Action Action        `json:"action,omitempty"` // ban
	TTL    time.Duration `json:"ttl,omitempty"`    // ban
	Count  int           `json:"count,omitempty"`  // ban: escalation level
	Manual bool          `json:"manual,omitempty"` // ban by an operator
	Cause  string        `json:"cause,omitempty"`  // unban: "expired" or "manual"
	Hits   int64         `json:"hits,omitempty"`   // unban: connections refused during the ban
	Node   string        `json:"node,omitempty"`   // the node that banned or unbanned, in a cluster's ban log
}

// Line renders e like the shield's log line, prefixed with its UTC time.
func (e BanEvent) Line() string {
	t := e.Time.UTC().Format(time.RFC3339)
	if e.Kind == "unban" {
		return fmt.Sprintf("%s shield unban addr=%s reason=%s cause=%s hits=%d", t, e.Prefix, e.Reason, e.Cause, e.Hits)
	}
	return fmt.Sprintf("%s shield ban addr=%s reason=%s ttl=%s action=%s count=%d", t, e.Prefix, e.Reason, e.TTL, e.Action, e.Count)
}

// TimelinePoint is the activity of one step of a timeline.
type TimelinePoint struct {
	Start             time.Time         `json:"start"`
	Admitted          uint64            `json:"admitted"`
	AdmittedKnownGood uint64            `json:"admitted_known_good"`
	Refused           map[string]uint64 `json:"refused,omitempty"`           // by action: reject, drop, tarpit; would_block for dry runs
	RefusedBySource   map[string]uint64 `json:"refused_by_source,omitempty"` // rule, ban:<reason>, limit:<name>, capacity, lockdown, ...
	Events            map[string]uint64 `json:"events,omitempty"`            // by Event name
	Bans              uint64            `json:"bans"`                        // bans issued
	Unbans            uint64            `json:"unbans"`
}

// RefusedTotal is the number of refused connections in the step.
func (p *TimelinePoint) RefusedTotal() uint64 {
	var n uint64
	for k, v := range p.Refused {
		if k != "would_block" {
			n += v
		}
	}
	return n
}

// HistorySnapshot is the history of a period: per address, the timeline
// and the bans. It is what the admin API serves and reports read.
type HistorySnapshot struct {
	Now      time.Time       `json:"now"`
	Since    time.Time       `json:"since"`
	Step     time.Duration   `json:"step"`
	Addrs    []AddrHistory   `json:"addrs"`
	Timeline []TimelinePoint `json:"timeline"`
	Bans     []BanEvent      `json:"bans"`
}

// History returns what each address did since the given time (minute
// resolution), sorted by address. Counts of addresses beyond
// HistoryMaxAddresses are in the timeline only.
func (s *Shield) History(since time.Time) []AddrHistory {
	s.foldHistory()
	return s.hist.addrHistory(since)
}

// Timeline returns the shield's activity since the given time, one point
// per step (rounded to whole minutes, at least one), empty steps included,
// up to now.
func (s *Shield) Timeline(since time.Time, step time.Duration) []TimelinePoint {
	s.foldHistory()
	return s.hist.timeline(since, step, s.now())
}

// HistorySnapshot returns History, Timeline and the bans and unbans since
// the given time.
func (s *Shield) HistorySnapshot(since time.Time, step time.Duration) HistorySnapshot {
	s.foldHistory()
	return s.hist.snapshot(since, step, s.now())
}

// ReadHistory reads the history persisted in stateDir (Options.StateDir)
// without a running Shield, e.g. for reports while the server is stopped,
// within the history bounds of cfg (the server's configuration).
func ReadHistory(stateDir string, cfg Config, since time.Time, step time.Duration, now time.Time) (HistorySnapshot, error) {
	if cfg.HistoryMaxAddresses <= 0 || cfg.HistoryMaxRecords <= 0 || cfg.HistoryRetention <= 0 {
		d := DefaultConfig()
		cfg.HistoryMaxAddresses, cfg.HistoryMaxRecords, cfg.HistoryRetention = d.HistoryMaxAddresses, d.HistoryMaxRecords, d.HistoryRetention
	}
	h := newHistory(&cfg, slog.New(slog.DiscardHandler))
	if _, err := os.Stat(stateDir); err != nil {
		return HistorySnapshot{}, fmt.Errorf("shield history: %w", err)
	}
	if err := h.load(histPath(stateDir), now); err != nil {
		return HistorySnapshot{}, err
	}
	return h.snapshot(since, step, now), nil
}

// maxHistoryRetention bounds the per-minute timeline table.
const maxHistoryRetention = 90 * 24 * time.Hour

// Bounds of the small per-record and per-minute tables.
const (
	maxRecRefusals    = 8  // distinct (source, action) per address and minute; beyond, "other"
	maxMinuteSources  = 32 // distinct source classes per minute in the timeline; beyond, "other"
	maxEvidence       = 8  // evidence lines per address in a query
	maxTimelinePoints = 10000
)

// history is the store. Everything is under mu, except the ban queue
// (under qmu) and persisted.
type history struct {
	mu        sync.Mutex
	maxAddrs  int
	maxRecs   int
	retention time.Duration
	log       *slog.Logger

	addrs    map[netip.Prefix]*histAddr
	nrecs    int
	minutes  []int64                  // minutes that have records, ascending
	byMinute map[int64][]netip.Prefix // addresses with a record in that minute
	totals   map[int64]*minuteTotals  // the timeline, per minute
	bans     []BanEvent               // oldest first, at most maxAddrs

	qmu           sync.Mutex
	banQ          []BanEvent  // bans and unbans not folded in yet, under qmu
	persisted     atomic.Bool // there is a state file: fold encodes lines for it
	file          *os.File    // append-only persistence, nil without a state folder
	path          string
	size, compact int64 // bytes in the file, and after the last compaction
}

type histAddr struct {
	recs []histRec // ascending minutes
}

// histRec is one (address, minute) record; it is also the unit that is
// folded in and persisted (a delta).
type histRec struct {
	minute       int64
	first, last  int64
	admitted     uint32
	admittedGood uint32
	events       []uint32 // by Event, nil when none
	refused      []refCount
}

type refCount struct {
	source string
	action Action
	dryRun bool
	n      uint32
}

type minuteTotals struct {
	admitted, admittedGood uint64
	refused                [4]uint64 // by Action; [Allow] counts dry-run "would block"
	events                 []uint64  // by Event
	bans, unbans           uint64
	sources                []srcCount
}

type srcCount struct {
	class string
	n     uint64
}

func newHistory(cfg *Config, log *slog.Logger) *history {
	return &history{
		maxAddrs:  cfg.HistoryMaxAddresses,
		maxRecs:   cfg.HistoryMaxRecords,
		retention: cfg.HistoryRetention,
		log:       log,
		addrs:     make(map[netip.Prefix]*histAddr),
		byMinute:  make(map[int64][]netip.Prefix),
		totals:    make(map[int64]*minuteTotals),
	}
}

// setBounds applies new history bounds (Reconfigure); a smaller bound
// trims at the next fold.
func (h *history) setBounds(cfg *Config) {
	h.mu.Lock()
	h.qmu.Lock()
	h.maxAddrs, h.maxRecs, h.retention = cfg.HistoryMaxAddresses, cfg.HistoryMaxRecords, cfg.HistoryRetention
	h.qmu.Unlock()
	h.mu.Unlock()
}

func addSat32(a *uint32, n uint32) {
	if *a+n < *a {
		*a = ^uint32(0)
		return
	}
	*a += n
}

// merge adds d's counts into r.
func (r *histRec) merge(d *histRec) {
	if r.first == 0 || (d.first != 0 && d.first < r.first) {
		r.first = d.first
	}
	r.last = max(r.last, d.last)
	addSat32(&r.admitted, d.admitted)
	addSat32(&r.admittedGood, d.admittedGood)
	if len(d.events) > len(r.events) {
		r.events = append(r.events, make([]uint32, len(d.events)-len(r.events))...)
	}
	for i, n := range d.events {
		addSat32(&r.events[i], n)
	}
	for _, rc := range d.refused {
		r.addRefusal(rc)
	}
}

func (r *histRec) addRefusal(rc refCount) {
	for i := range r.refused {
		x := &r.refused[i]
		if x.source == rc.source && x.action == rc.action && x.dryRun == rc.dryRun {
			addSat32(&x.n, rc.n)
			return
		}
	}
	if len(r.refused) >= maxRecRefusals {
		rc.source = "other"
		for i := range r.refused {
			x := &r.refused[i]
			if x.source == "other" && x.action == rc.action && x.dryRun == rc.dryRun {
				addSat32(&x.n, rc.n)
				return
			}
		}
	}
	r.refused = append(r.refused, rc)
}

// sourceClass groups decision sources for the timeline: every rule is
// "rule"; bans, limits and the rest keep their name.
func sourceClass(src string) string {
	for _, p := range []string{"ban:", "limit:", "proxy:", "evicted:"} {
		if strings.HasPrefix(src, p) {
			return src
		}
	}
	switch src {
	case "capacity", "lockdown", "other":
		return src
	}
	return "rule"
}

// foldHistory moves the counts gathered since the last fold into the
// history and appends them to the state file.
func (s *Shield) foldHistory() {
	s.kernelCount(true) // the kernel's drops up to now
	s.hist.fold(s.agg.takeHistory(), s.act.take(), s.now())
}

// fold merges denial counts and activity into records, applies them and
// persists them.
func (h *history) fold(denials []aggEntry, act []map[actKey]actVal, now time.Time) {
	type dk struct {
		where  netip.Prefix
		minute int64
	}
	n := len(denials)
	for _, m := range act {
		n += len(m)
	}
	// One allocation for the map and one for the records (a busy minute has
	// tens of thousands): recs never outgrows n, so the pointers stay valid.
	deltas := make(map[dk]*histRec, n)
	recs := make([]histRec, 0, n)
	get := func(where netip.Prefix, minute int64) *histRec {
		d := deltas[dk{where, minute}]
		if d == nil {
			recs = append(recs, histRec{minute: minute})
			d = &recs[len(recs)-1]
			deltas[dk{where, minute}] = d
		}
		return d
	}
	for _, e := range denials {
		d := get(e.k.where, e.k.minute)
		d.merge(&histRec{first: e.v.first, last: e.v.last})
		d.addRefusal(refCount{source: e.k.source, action: e.k.action, dryRun: e.k.dryRun, n: uint32(min(e.v.hist, uint64(^uint32(0))))})
	}
	for _, m := range act {
		for k, v := range m {
			var where netip.Prefix
			if k.addr.IsValid() {
				where = hostPrefix(k.addr)
			}
			get(where, k.minute).merge(&histRec{first: v.first, last: v.last, admitted: v.admitted, admittedGood: v.admittedGood, events: v.events.slice()})
		}
	}
	keys := make([]dk, 0, len(deltas))
	for k := range deltas {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].minute != keys[j].minute {
			return keys[i].minute < keys[j].minute
		}
		return keys[i].where.Addr().Less(keys[j].where.Addr()) || (keys[i].where.Addr() == keys[j].where.Addr() && keys[i].where.Bits() < keys[j].where.Bits())
	})
	// Encoding is the slow part: done before taking the lock.
	var lines []byte
	if h.persisted.Load() {
		lines = make([]byte, 0, 100*len(keys)) // a record's line is ~70–150 bytes
		for _, k := range keys {
			lines = appendRecLine(lines, "d", k.where, deltas[k])
		}
	}
	h.qmu.Lock()
	bans := h.banQ
	h.banQ = nil
	h.qmu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	var banLines []byte
	for _, e := range bans {
		h.addBan(e, true)
		if h.path != "" {
			banLines = appendLine(banLines, banLine("b", e))
		}
	}
	for _, k := range keys {
		h.apply(k.where, deltas[k], true)
	}
	h.expire(now)
	if h.path == "" {
		return
	}
	h.persist(append(banLines, lines...))
}

// apply adds a delta to the address's record and, with totals, to the
// timeline. An invalid where (overflow) counts in the timeline only.
func (h *history) apply(where netip.Prefix, d *histRec, totals bool) {
	if totals {
		h.addTotals(d)
	}
	if !where.IsValid() {
		return
	}
	a := h.addrs[where]
	if a == nil {
		for len(h.addrs) >= h.maxAddrs && len(h.minutes) > 0 && h.minutes[0] < d.minute {
			h.dropMinute()
		}
		if len(h.addrs) >= h.maxAddrs {
			return // full of addresses as recent as this one: timeline only
		}
		a = new(histAddr)
		h.addrs[where] = a
	}
	i := sort.Search(len(a.recs), func(i int) bool { return a.recs[i].minute >= d.minute })
	if i < len(a.recs) && a.recs[i].minute == d.minute {
		a.recs[i].merge(d)
		return
	}
	r := histRec{minute: d.minute}
	r.merge(d)
	a.recs = append(a.recs, histRec{})
	copy(a.recs[i+1:], a.recs[i:])
	a.recs[i] = r
	h.nrecs++
	if _, ok := h.byMinute[d.minute]; !ok {
		j := sort.Search(len(h.minutes), func(j int) bool { return h.minutes[j] >= d.minute })
		h.minutes = append(h.minutes, 0)
		copy(h.minutes[j+1:], h.minutes[j:])
		h.minutes[j] = d.minute
	}
	h.byMinute[d.minute] = append(h.byMinute[d.minute], where)
	for h.nrecs > h.maxRecs && len(h.minutes) > 0 {
		h.dropMinute()
	}
}

// dropMinute forgets the records of the oldest minute.
func (h *history) dropMinute() {
	m := h.minutes[0]
	h.minutes = h.minutes[1:]
	for _, p := range h.byMinute[m] {
		a := h.addrs[p]
		if a == nil {
			continue
		}
		i := sort.Search(len(a.recs), func(i int) bool { return a.recs[i].minute >= m })
		if i < len(a.recs) && a.recs[i].minute == m {
			if i == 0 {
				// The usual case, the address's oldest record: no copying.
				a.recs[0] = histRec{}
				a.recs = a.recs[1:]
			} else {
				a.recs = append(a.recs[:i], a.recs[i+1:]...)
			}
			h.nrecs--
		}
		if len(a.recs) == 0 {
			delete(h.addrs, p)
		}
	}
	delete(h.byMinute, m)
}

func (h *history) addTotals(d *histRec) {
	t := h.totals[d.minute]
	if t == nil {
		t = new(minuteTotals)
		h.totals[d.minute] = t
	}
	t.admitted += uint64(d.admitted)
	t.admittedGood += uint64(d.admittedGood)
	if len(d.events) > len(t.events) {
		t.events = append(t.events, make([]uint64, len(d.events)-len(t.events))...)
	}
	for i, n := range d.events {
		t.events[i] += uint64(n)
	}
	for _, rc := range d.refused {
		if rc.dryRun {
			t.refused[Allow] += uint64(rc.n)
			continue
		}
		// An eviction closes an admitted connection: not a refusal.
		if rc.action <= Tarpit && !strings.HasPrefix(rc.source, "evicted:") {
			t.refused[rc.action] += uint64(rc.n)
		}
		t.addSource(sourceClass(rc.source), uint64(rc.n))
	}
}

func (t *minuteTotals) addSource(class string, n uint64) {
	for i := range t.sources {
		if t.sources[i].class == class {
			t.sources[i].n += n
			return
		}
	}
	if len(t.sources) >= maxMinuteSources {
		class = "other"
		for i := range t.sources {
			if t.sources[i].class == class {
				t.sources[i].n += n
				return
			}
		}
	}
	t.sources = append(t.sources, srcCount{class, n})
}

// historyUnban records the end of b.
func (s *Shield) historyUnban(b *ban, cause string, at time.Time) {
	s.historyBan(BanEvent{Time: at, Kind: "unban", Prefix: b.prefix, Reason: b.reason, Cause: cause, Hits: b.hits.Load()})
}

// historyBan records a ban or unban (from the shield, under banMu).
func (s *Shield) historyBan(e BanEvent) {
	e.Time = e.Time.UTC()
	// Queued, not applied: a fold or a query may hold the history lock for
	// a while, and the caller holds the ban lock. The next fold (or query)
	// applies and writes it.
	h := s.hist
	h.qmu.Lock()
	if len(h.banQ) < h.maxAddrs {
		h.banQ = append(h.banQ, e)
	}
	h.qmu.Unlock()
}

func (h *history) addBan(e BanEvent, totals bool) {
	if totals {
		m := unixMinute(e.Time.UnixNano())
		t := h.totals[m]
		if t == nil {
			t = new(minuteTotals)
			h.totals[m] = t
		}
		if e.Kind == "unban" {
			t.unbans++
		} else {
			t.bans++
		}
	}
	h.bans = append(h.bans, e)
	if len(h.bans) > h.maxAddrs+h.maxAddrs/8 {
		// Trim in chunks, oldest first, so a ban storm costs O(1) per ban.
		h.bans = append(h.bans[:0], h.bans[len(h.bans)-h.maxAddrs:]...)
	}
}

// expire drops what is older than the retention.
func (h *history) expire(now time.Time) {
	cut := unixMinute(now.Add(-h.retention).UnixNano())
	for len(h.minutes) > 0 && h.minutes[0] < cut {
		h.dropMinute()
	}
	for m := range h.totals {
		if m < cut {
			delete(h.totals, m)
		}
	}
	i := 0
	for i < len(h.bans) && unixMinute(h.bans[i].Time.UnixNano()) < cut {
		i++
	}
	if i > 0 {
		h.bans = append(h.bans[:0], h.bans[i:]...)
	}
}

func (h *history) snapshot(since time.Time, step time.Duration, now time.Time) HistorySnapshot {
	snap := HistorySnapshot{Now: now.UTC(), Since: since.UTC()}
	snap.Addrs = h.addrHistory(since)
	snap.Timeline = h.timeline(since, step, now)
	if len(snap.Timeline) > 1 {
		snap.Step = snap.Timeline[1].Start.Sub(snap.Timeline[0].Start)
	} else {
		snap.Step = stepOf(step)
	}
	h.mu.Lock()
	for _, b := range h.bans {
		if !b.Time.Before(since) {
			snap.Bans = append(snap.Bans, b)
		}
	}
	h.mu.Unlock()
	return snap
}

func (h *history) addrHistory(since time.Time) []AddrHistory {
	h.mu.Lock()
	defer h.mu.Unlock()
	from := unixMinute(since.UnixNano())
	bansOf := make(map[netip.Prefix][]BanEvent)
	for _, b := range h.bans {
		if !b.Time.Before(since) {
			bansOf[b.Prefix] = append(bansOf[b.Prefix], b)
		}
	}
	var out []AddrHistory
	for p, a := range h.addrs {
		i := sort.Search(len(a.recs), func(i int) bool { return a.recs[i].minute >= from })
		if i == len(a.recs) {
			continue
		}
		out = append(out, summarize(p, a.recs[i:], bansOf[p]))
		delete(bansOf, p)
	}
	// Bans of addresses or networks without records in the period.
	for p, bs := range bansOf {
		out = append(out, summarize(p, nil, bs))
	}
	sort.Slice(out, func(i, j int) bool { return prefixLess(out[i].Addr, out[j].Addr) })
	return out
}

func prefixLess(a, b netip.Prefix) bool {
	if a.Addr() != b.Addr() {
		return a.Addr().Less(b.Addr())
	}
	return a.Bits() < b.Bits()
}

// summarize adds up an address's records and picks its evidence.
func summarize(p netip.Prefix, recs []histRec, bans []BanEvent) AddrHistory {
	ah := AddrHistory{Addr: p, Bans: bans}
	type line struct {
		t    int64
		text string
	}
	var lines []line
	refused := make(map[refCount]uint64)
	var order []refCount
	for _, r := range recs {
		if ah.First.IsZero() || time.Unix(0, r.first).Before(ah.First) {
			ah.First = time.Unix(0, r.first).UTC()
		}
		if l := time.Unix(0, r.last).UTC(); l.After(ah.Last) {
			ah.Last = l
		}
		ah.Admitted += uint64(r.admitted)
		ah.AdmittedKnownGood += uint64(r.admittedGood)
		ts := time.Unix(0, r.first).UTC().Format(time.RFC3339)
		var evs []string
		for i, n := range r.events {
			if ev := Event(i); n > 0 && ev.valid() {
				if ah.Events == nil {
					ah.Events = make(map[string]uint64)
				}
				ah.Events[ev.String()] += uint64(n)
				if !ev.Behaviour().Benign {
					evs = append(evs, fmt.Sprintf("%s=%d", ev, n))
				}
			}
		}
		if len(evs) > 0 {
			lines = append(lines, line{r.first, fmt.Sprintf("%s shield reported addr=%s %s", ts, whereString(p), strings.Join(evs, " "))})
		}
		var lastTS string
		if len(r.refused) > 0 {
			lastTS = time.Unix(0, r.last).UTC().Format(time.RFC3339)
		}
		for _, rc := range r.refused {
			k := rc
			k.n = 0
			if _, ok := refused[k]; !ok {
				order = append(order, k)
			}
			refused[k] += uint64(rc.n)
			msg := "shield denied"
			if rc.dryRun {
				msg = "shield would block"
			}
			// Stamped with the record's last activity, as the aggregated
			// log line is written after the refusals it counts: a ban
			// earned in the same minute comes before the refusals it
			// caused, not after.
			lines = append(lines, line{r.last, fmt.Sprintf("%s %s addr=%s count=%d source=%s action=%s", lastTS, msg, whereString(p), rc.n, rc.source, rc.action)})
		}
	}
	for _, k := range order {
		ah.Refused = append(ah.Refused, Refusal{Source: k.source, Action: k.action, DryRun: k.dryRun, Count: refused[k]})
	}
	sort.SliceStable(ah.Refused, func(i, j int) bool { return ah.Refused[i].Count > ah.Refused[j].Count })
	for _, b := range bans {
		lines = append(lines, line{b.Time.UnixNano(), b.Line()})
		if ah.First.IsZero() || b.Time.Before(ah.First) {
			ah.First = b.Time
		}
		if b.Time.After(ah.Last) {
			ah.Last = b.Time
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].t < lines[j].t })
	if len(lines) > maxEvidence {
		// The start and the end of the story.
		lines = append(lines[:maxEvidence-3], lines[len(lines)-3:]...)
	}
	for _, l := range lines {
		ah.Evidence = append(ah.Evidence, l.text)
	}
	return ah
}

// stepOf rounds a timeline step to whole minutes, at least one.
func stepOf(step time.Duration) time.Duration {
	step = step.Truncate(time.Minute)
	if step < time.Minute {
		step = time.Minute
	}
	return step
}

var refusedNames = [4]string{Allow: "would_block", Reject: "reject", Drop: "drop", Tarpit: "tarpit"}

func (h *history) timeline(since time.Time, step time.Duration, now time.Time) []TimelinePoint {
	step = stepOf(step)
	start := since.Truncate(step)
	if now.Before(start) {
		return nil
	}
	for now.Sub(start)/step+1 > maxTimelinePoints {
		step *= 2
		start = since.Truncate(step)
	}
	n := int(now.Sub(start)/step) + 1
	pts := make([]TimelinePoint, n)
	for i := range pts {
		pts[i].Start = start.Add(time.Duration(i) * step).UTC()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for m, t := range h.totals {
		at := time.Unix(m*60, 0)
		if at.Before(start) {
			continue
		}
		i := int(at.Sub(start) / step)
		if i >= n {
			continue
		}
		p := &pts[i]
		p.Admitted += t.admitted
		p.AdmittedKnownGood += t.admittedGood
		p.Bans += t.bans
		p.Unbans += t.unbans
		for a, c := range t.refused {
			if c > 0 {
				if p.Refused == nil {
					p.Refused = make(map[string]uint64)
				}
				p.Refused[refusedNames[a]] += c
			}
		}
		for _, sc := range t.sources {
			if p.RefusedBySource == nil {
				p.RefusedBySource = make(map[string]uint64)
			}
			p.RefusedBySource[sc.class] += sc.n
		}
		for ev, c := range t.events {
			if c > 0 {
				if p.Events == nil {
					p.Events = make(map[string]uint64)
				}
				p.Events[Event(ev).String()] += c
			}
		}
	}
	return pts
}
