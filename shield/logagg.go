package shield

import (
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// aggregator counts denials per (address or prefix, source, action, minute)
// so that a flood produces one log line per key and interval, never one per
// connection, and feeds the same counts to the history. It is sharded so
// the refusal path takes no global lock, and counting an already-seen key
// allocates nothing.
type aggregator struct {
	shards [16]aggShard
	now    func() time.Time
	netOf  func(netip.Addr) netip.Prefix // the network of an address, for roll-up lines
}

type aggKey struct {
	where  netip.Prefix // the client address as a full-length prefix, a network prefix, or invalid for "*" (overflow)
	source string
	action Action
	dryRun bool
	minute int64 // unix minute of the denials (history buckets); merged for the log line
}

// aggVal holds the counts of one key: log is what the next log line
// reports, hist what the history has not folded in yet.
type aggVal struct {
	log, hist   uint64
	first, last int64 // unix nanoseconds of the first and last denial not yet in the history
}

// aggEntry is one key with its counts, as handed to the history.
type aggEntry struct {
	k aggKey
	v aggVal
}

type aggShard struct {
	mu sync.Mutex
	m  map[aggKey]aggVal
}

// maxAggKeys bounds the distinct keys per shard and interval (65,536 in
// all, a few MB); beyond it, counts go to a per-(source, action) overflow
// key logged with addr=* and counted in the history's timeline only. It is
// this large so the history can name every address of a botnet; the log
// stays small through the roll-up below.
const maxAggKeys = 4096

func newAggregator(now func() time.Time) *aggregator {
	a := &aggregator{now: now}
	for i := range a.shards {
		a.shards[i].m = make(map[aggKey]aggVal)
	}
	return a
}

func (a *aggregator) add(where netip.Prefix, source string, action Action, dryRun bool) {
	a.addN(where, source, action, dryRun, 1)
}

// addN counts n denials at once (the kernel's drops, read back).
func (a *aggregator) addN(where netip.Prefix, source string, action Action, dryRun bool, n uint64) {
	ns := a.now().UnixNano()
	k := aggKey{where: where, source: source, action: action, dryRun: dryRun, minute: unixMinute(ns)}
	sh := &a.shards[hashPrefix(where)%uint64(len(a.shards))]
	sh.mu.Lock()
	v, ok := sh.m[k]
	if !ok && len(sh.m) >= maxAggKeys {
		k.where = netip.Prefix{}
		v = sh.m[k]
	}
	v.log += n
	v.hist += n
	if v.first == 0 {
		v.first = ns
	}
	v.last = ns
	sh.m[k] = v
	sh.mu.Unlock()
}

// takeHistory returns the counts the history has not seen yet and marks
// them seen; the log counts stay for the next flush.
func (a *aggregator) takeHistory() []aggEntry {
	var out []aggEntry
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for k, v := range sh.m {
			if v.hist > 0 {
				out = append(out, aggEntry{k, v})
				sh.m[k] = aggVal{log: v.log}
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// flush logs and resets the counts. It returns the counts the history has
// not seen yet.
func (a *aggregator) flush(log *slog.Logger, interval time.Duration) []aggEntry {
	total := make(map[aggKey]uint64)
	var hist []aggEntry
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		m := sh.m
		sh.m = make(map[aggKey]aggVal)
		sh.mu.Unlock()
		for k, v := range m {
			if v.hist > 0 {
				hist = append(hist, aggEntry{k, v})
			}
			k.minute = 0 // one line per key and interval
			total[k] += v.log
		}
	}
	for _, l := range a.rollup(total) {
		msg := "shield denied"
		if l.key.dryRun {
			msg = "shield would block"
		}
		args := []any{"addr", whereString(l.key.where), "count", l.count, "source", l.key.source, "action", l.key.action.String(), "interval", interval.String()}
		if l.addrs > 1 {
			args = append(args, "addresses", l.addrs)
		}
		log.Info(msg, args...)
	}
	return hist
}

// Roll-up limits: a network with more than rollupAddrs refused addresses
// in one interval is logged as one line for the network (a botnet in one
// ISP range), and at most maxLogLines lines are written per interval, the
// rest summed into one line for addr "*".
const (
	rollupAddrs = 8
	maxLogLines = 50
)

type logLine struct {
	key   aggKey
	count uint64
	addrs int
}

// rollup turns per-address counts into the lines to log, biggest first.
func (a *aggregator) rollup(total map[aggKey]uint64) []logLine {
	groups := make(map[aggKey][]aggKey)
	var lines []logLine
	for k, n := range total {
		if !k.where.IsValid() || !k.where.IsSingleIP() || a.netOf == nil {
			lines = append(lines, logLine{k, n, 1})
			continue
		}
		g := k
		g.where = a.netOf(k.where.Addr())
		groups[g] = append(groups[g], k)
	}
	for g, ks := range groups {
		if len(ks) <= rollupAddrs {
			for _, k := range ks {
				lines = append(lines, logLine{k, total[k], 1})
			}
			continue
		}
		l := logLine{key: g, addrs: len(ks)}
		for _, k := range ks {
			l.count += total[k]
		}
		lines = append(lines, l)
	}
	sort.Slice(lines, func(i, j int) bool {
		if lines[i].count != lines[j].count {
			return lines[i].count > lines[j].count
		}
		return whereString(lines[i].key.where) < whereString(lines[j].key.where)
	})
	if len(lines) > maxLogLines {
		rest := logLine{key: aggKey{source: "*", action: lines[maxLogLines].key.action}}
		for _, l := range lines[maxLogLines-1:] {
			rest.count += l.count
			rest.addrs += l.addrs
		}
		lines = append(lines[:maxLogLines-1], rest)
	}
	return lines
}

// whereString prints an aggregation key: the address alone for a
// single-address prefix, "*" for the overflow key.
func whereString(p netip.Prefix) string {
	if !p.IsValid() {
		return "*"
	}
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// unixMinute is the minute bucket of a unix-nanosecond time.
func unixMinute(ns int64) int64 {
	m := ns / int64(time.Minute)
	if ns < 0 && ns%int64(time.Minute) != 0 {
		m--
	}
	return m
}
