package shield

import (
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// aggregator counts denials per (address or prefix, source, action) so that
// a flood produces one log line per key and interval, never one per
// connection. It is sharded so the refusal path takes no global lock.
type aggregator struct {
	shards [16]aggShard
}

type aggKey struct {
	where  netip.Prefix // the client address as a full-length prefix, a network prefix, or invalid for "*" (overflow)
	source string
	action Action
	dryRun bool
}

type aggShard struct {
	mu sync.Mutex
	m  map[aggKey]uint64
}

// maxAggKeys bounds the distinct keys per shard and interval; beyond it,
// counts go to a per-(source, action) overflow key logged with addr=*.
const maxAggKeys = 256

func newAggregator() *aggregator {
	a := new(aggregator)
	for i := range a.shards {
		a.shards[i].m = make(map[aggKey]uint64)
	}
	return a
}

func (a *aggregator) add(where netip.Prefix, source string, action Action, dryRun bool) {
	k := aggKey{where: where, source: source, action: action, dryRun: dryRun}
	sh := &a.shards[hashPrefix(where)%uint64(len(a.shards))]
	sh.mu.Lock()
	if _, ok := sh.m[k]; !ok && len(sh.m) >= maxAggKeys {
		k.where = netip.Prefix{}
	}
	sh.m[k]++
	sh.mu.Unlock()
}

// flush logs and resets the counts.
func (a *aggregator) flush(log *slog.Logger, interval time.Duration) {
	total := make(map[aggKey]uint64)
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		m := sh.m
		sh.m = make(map[aggKey]uint64)
		sh.mu.Unlock()
		for k, n := range m {
			total[k] += n
		}
	}
	keys := make([]aggKey, 0, len(total))
	for k := range total {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return total[keys[i]] > total[keys[j]] })
	for _, k := range keys {
		addr := "*"
		if k.where.IsValid() {
			addr = k.where.String()
			if k.where.IsSingleIP() {
				addr = k.where.Addr().String()
			}
		}
		msg := "shield denied"
		if k.dryRun {
			msg = "shield would block"
		}
		log.Info(msg, "addr", addr, "count", total[k], "source", k.source, "action", k.action.String(), "interval", interval.String())
	}
}
