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

// maxAggKeys bounds the distinct keys per shard and interval; beyond it,
// counts go to a per-(source, action) overflow key logged with addr=*.
const maxAggKeys = 256

func newAggregator(now func() time.Time) *aggregator {
	a := &aggregator{now: now}
	for i := range a.shards {
		a.shards[i].m = make(map[aggKey]aggVal)
	}
	return a
}

func (a *aggregator) add(where netip.Prefix, source string, action Action, dryRun bool) {
	ns := a.now().UnixNano()
	k := aggKey{where: where, source: source, action: action, dryRun: dryRun, minute: unixMinute(ns)}
	sh := &a.shards[hashPrefix(where)%uint64(len(a.shards))]
	sh.mu.Lock()
	v, ok := sh.m[k]
	if !ok && len(sh.m) >= maxAggKeys {
		k.where = netip.Prefix{}
		v = sh.m[k]
	}
	v.log++
	v.hist++
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
	keys := make([]aggKey, 0, len(total))
	for k := range total {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return total[keys[i]] > total[keys[j]] })
	for _, k := range keys {
		msg := "shield denied"
		if k.dryRun {
			msg = "shield would block"
		}
		log.Info(msg, "addr", whereString(k.where), "count", total[k], "source", k.source, "action", k.action.String(), "interval", interval.String())
	}
	return hist
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
