package shield

import (
	"net/netip"
	"sync"
	"time"
)

// activity counts admitted connections and reported events per (address,
// minute) between history folds. Like the denial aggregator it is sharded,
// bounded, and allocates nothing for a key already seen.
type activity struct {
	shards [16]actShard
	now    func() time.Time
}

type actKey struct {
	addr   netip.Addr // invalid: overflow, counted in the timeline only
	minute int64
}

type actVal struct {
	first, last  int64 // unix nanoseconds
	admitted     uint32
	admittedGood uint32 // admitted while known-good
	events       eventSlots[uint32]
}

type actShard struct {
	mu sync.Mutex
	m  map[actKey]actVal
}

// maxActKeys bounds the distinct keys per shard between folds.
const maxActKeys = 1024

func newActivity(now func() time.Time) *activity {
	a := &activity{now: now}
	for i := range a.shards {
		a.shards[i].m = make(map[actKey]actVal)
	}
	return a
}

// add counts for addr: one admission (admitted, known-good) and/or one
// event (ev != 0). No closures here: the value stays on the stack.
func (a *activity) add(addr netip.Addr, admitted, knownGood bool, ev Event) {
	ns := a.now().UnixNano()
	k := actKey{addr: addr, minute: unixMinute(ns)}
	sh := &a.shards[hashAddr(addr)%uint64(len(a.shards))]
	sh.mu.Lock()
	v, ok := sh.m[k]
	if !ok && len(sh.m) >= maxActKeys {
		k.addr = netip.Addr{}
		v = sh.m[k]
	}
	if v.first == 0 {
		v.first = ns
	}
	v.last = ns
	if admitted {
		v.admitted++
		if knownGood {
			v.admittedGood++
		}
	}
	if ev.valid() {
		*v.events.at(ev)++
	}
	sh.m[k] = v
	sh.mu.Unlock()
}

// admitted counts one admitted connection from addr.
func (a *activity) admitted(addr netip.Addr, knownGood bool) { a.add(addr, true, knownGood, 0) }

// event counts one reported event from addr.
func (a *activity) event(addr netip.Addr, ev Event) { a.add(addr, false, false, ev) }

// take returns and resets the counts, one map per shard. Each shard starts
// the next minute with room for as many addresses as it had in this one.
func (a *activity) take() []map[actKey]actVal {
	out := make([]map[actKey]actVal, len(a.shards))
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		out[i] = sh.m
		sh.m = make(map[actKey]actVal, len(out[i]))
		sh.mu.Unlock()
	}
	return out
}
