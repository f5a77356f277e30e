package shield

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gaissmai/bart"
)

// lru is a bounded, sharded, least-recently-used map. Every table keyed by
// something a client controls (an address, a prefix, an account name) is one
// of these, so a million distinct attackers cost at most capacity entries.
//
// Values live inside the nodes and are only touched under their shard's
// lock, through do or withNode.
type lru[K comparable, V any] struct {
	shards []lruShard[K, V]
	hash   func(K) uint64
	// keep, when set, asks to spare a least-recently-used victim (e.g. one
	// with open connections); a spared victim moves to the front, and after
	// a few tries the victim is evicted anyway.
	keep func(*V) bool
	// significance, when set, makes eviction pick the least significant
	// of the evictSample least recently used entries (reputation: a score
	// that has decayed to nothing goes before a recent ban).
	significance func(*V) float64
	// added and removed, when set, hear of every key that enters or
	// leaves the table (insert, delete, eviction, each), under its shard
	// lock; netTable keeps its network index with them.
	added, removed func(K)
	// walks counts the calls of each: a test's proof that a hot path
	// (revoking a banned network's known-good addresses) does not walk.
	walks atomic.Int64
}

// evictSample is how many least recently used entries eviction compares
// by significance.
const evictSample = 8

type lruShard[K comparable, V any] struct {
	mu   sync.Mutex
	m    map[K]*lruNode[K, V]
	head *lruNode[K, V] // most recently used
	tail *lruNode[K, V]
	cap  int
}

type lruNode[K comparable, V any] struct {
	key        K
	val        V
	prev, next *lruNode[K, V]
	shard      *lruShard[K, V]
}

const lruShards = 64

func newLRU[K comparable, V any](capacity int, hash func(K) uint64) *lru[K, V] {
	n := lruShards
	if capacity < n*4 {
		n = 1
	}
	per := (capacity + n - 1) / n
	t := &lru[K, V]{shards: make([]lruShard[K, V], n), hash: hash}
	for i := range t.shards {
		t.shards[i].m = make(map[K]*lruNode[K, V])
		t.shards[i].cap = per
	}
	return t
}

func (t *lru[K, V]) shard(k K) *lruShard[K, V] {
	if len(t.shards) == 1 {
		return &t.shards[0]
	}
	return &t.shards[t.hash(k)%uint64(len(t.shards))]
}

// do runs fn on k's value under the shard lock. With create, a missing entry
// is made (evicting the least recently used one if the shard is full) and
// fn's created argument is true. Without create, fn runs only if k exists.
// do reports whether fn ran. fn must not call back into t.
func (t *lru[K, V]) do(k K, create bool, fn func(v *V, created bool)) bool {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n, ok := sh.m[k]
	if ok {
		sh.moveFront(n)
		fn(&n.val, false)
		return true
	}
	if !create {
		return false
	}
	n = t.insert(sh, k)
	fn(&n.val, true)
	return true
}

// doNode is do that also returns the node, so a caller can later reach the
// same value with withNode even after the key was evicted (the node then
// lives on detached and changes to it are harmless).
func (t *lru[K, V]) doNode(k K, fn func(v *V, created bool)) *lruNode[K, V] {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n, ok := sh.m[k]
	if ok {
		sh.moveFront(n)
		fn(&n.val, false)
		return n
	}
	n = t.insert(sh, k)
	fn(&n.val, true)
	return n
}

// insert adds k to sh (full: after evicting one entry). Called under
// sh.mu.
func (t *lru[K, V]) insert(sh *lruShard[K, V], k K) *lruNode[K, V] {
	if len(sh.m) >= sh.cap {
		t.evict(sh)
	}
	n := &lruNode[K, V]{key: k, shard: sh}
	sh.m[k] = n
	sh.pushFront(n)
	if t.added != nil {
		t.added(k)
	}
	return n
}

// remove takes n out of sh. Called under sh.mu.
func (t *lru[K, V]) remove(sh *lruShard[K, V], n *lruNode[K, V]) {
	sh.unlink(n)
	delete(sh.m, n.key)
	if t.removed != nil {
		t.removed(n.key)
	}
}

// withNode runs fn on n's value under its shard lock.
func withNode[K comparable, V any](n *lruNode[K, V], fn func(v *V)) {
	n.shard.mu.Lock()
	fn(&n.val)
	n.shard.mu.Unlock()
}

func (t *lru[K, V]) evict(sh *lruShard[K, V]) {
	if t.significance != nil {
		victim := sh.tail
		least := 0.0
		i := 0
		for n := sh.tail; n != nil && i < evictSample; n, i = n.prev, i+1 {
			if w := t.significance(&n.val); n == sh.tail || w < least {
				victim, least = n, w
			}
		}
		if victim != nil {
			t.remove(sh, victim)
		}
		return
	}
	for tries := 0; tries < 4 && t.keep != nil && sh.tail != nil && sh.tail != sh.head && t.keep(&sh.tail.val); tries++ {
		sh.moveFront(sh.tail)
	}
	if v := sh.tail; v != nil {
		t.remove(sh, v)
	}
}

// delete removes k.
func (t *lru[K, V]) delete(k K) {
	sh := t.shard(k)
	sh.mu.Lock()
	if n, ok := sh.m[k]; ok {
		t.remove(sh, n)
	}
	sh.mu.Unlock()
}

// each visits every entry, shard by shard, under the shard lock; fn returns
// false to delete the entry.
func (t *lru[K, V]) each(fn func(k K, v *V) (keep bool)) {
	t.walks.Add(1)
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for n := sh.tail; n != nil; {
			prev := n.prev
			if !fn(n.key, &n.val) {
				t.remove(sh, n)
			}
			n = prev
		}
		sh.mu.Unlock()
	}
}

// netTable is an address-keyed lru with an index of its addresses by
// network: a bart prefix set holding each key as a host route (about 90
// bytes an address, so bounded with the table), kept by the lru's added
// and removed hooks.
//
// A network ban revokes the known-good status of its addresses in two such
// tables (the Shield's and the LocalStore's), and a harvest or junk flood
// from one /16 (or one IPv6 /48) bans hundreds of networks a second.
// Walking up to table_size entries for each ban, under the shard locks the
// accept path takes, cost whole seconds of CPU and stalled every client
// (compare/scenarios.sh harvest: legit p99 × 10 in the second the bans
// came). With the index, deleteIn costs the addresses it removes, for a
// /24, a /64 or a /48 alike.
type netTable[V any] struct {
	*lru[netip.Addr, V]
	mu    sync.Mutex // hosts; taken under a shard lock, never the other way round
	hosts bart.Lite
}

func newNetTable[V any](capacity int) *netTable[V] {
	t := &netTable[V]{lru: newLRU[netip.Addr, V](capacity, hashAddr)}
	t.added = func(a netip.Addr) {
		t.mu.Lock()
		t.hosts.Insert(netip.PrefixFrom(a, a.BitLen()))
		t.mu.Unlock()
	}
	t.removed = func(a netip.Addr) {
		t.mu.Lock()
		t.hosts.Delete(netip.PrefixFrom(a, a.BitLen()))
		t.mu.Unlock()
	}
	return t
}

// deleteIn removes every address in p.
func (t *netTable[V]) deleteIn(p netip.Prefix) {
	p = p.Masked()
	if p.IsSingleIP() {
		t.delete(p.Addr())
		return
	}
	var in []netip.Addr
	t.mu.Lock()
	for h := range t.hosts.Subnets(p) {
		in = append(in, h.Addr())
	}
	t.mu.Unlock()
	// Deleted outside t.mu: delete takes a shard lock, and the hooks take
	// t.mu under it.
	for _, a := range in {
		t.delete(a)
	}
}

// len returns the number of entries.
func (t *lru[K, V]) len() int {
	total := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		total += len(sh.m)
		sh.mu.Unlock()
	}
	return total
}

func (sh *lruShard[K, V]) pushFront(n *lruNode[K, V]) {
	n.prev = nil
	n.next = sh.head
	if sh.head != nil {
		sh.head.prev = n
	}
	sh.head = n
	if sh.tail == nil {
		sh.tail = n
	}
}

func (sh *lruShard[K, V]) unlink(n *lruNode[K, V]) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		sh.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		sh.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

func (sh *lruShard[K, V]) moveFront(n *lruNode[K, V]) {
	if sh.head == n {
		return
	}
	sh.unlink(n)
	sh.pushFront(n)
}

var hashSeed = maphash.MakeSeed()

func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	var h maphash.Hash
	h.SetSeed(hashSeed)
	h.Write(b[:])
	return h.Sum64()
}

func hashPrefix(p netip.Prefix) uint64 {
	return hashAddr(p.Addr()) ^ uint64(p.Bits())*0x9e3779b97f4a7c15
}

func hashString(s string) uint64 { return maphash.String(hashSeed, s) }

// bucket is a token bucket. tokens and last are updated in place; the clock
// is passed in.
type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last refill; 0 = new (full)
}

// refill brings the bucket to now and returns its tokens.
func (b *bucket) refill(now int64, rate float64, burst int) float64 {
	if b.last == 0 {
		b.tokens = float64(burst)
		b.last = now
	} else if now > b.last {
		b.tokens += float64(now-b.last) / 1e9 * rate
		if b.tokens > float64(burst) {
			b.tokens = float64(burst)
		}
		b.last = now
	}
	return b.tokens
}

// take removes one token if there is one.
func (b *bucket) take(now int64, rate float64, burst int) bool {
	if b.refill(now, rate, burst) < 1 {
		return false
	}
	b.tokens--
	return true
}

// peek returns the tokens available at now without changing the bucket.
func (b bucket) peek(now int64, rate float64, burst int) float64 {
	return b.refill(now, rate, burst)
}

// window counts events in a fixed window that starts at the first event.
type window struct {
	start int64
	count int32
}

// add counts one event at now and returns the count in the current window.
func (w *window) add(now int64, length int64) int32 {
	if w.start == 0 || now-w.start >= length {
		w.start, w.count = now, 0
	}
	w.count++
	return w.count
}

// current returns the count still inside the window at now.
func (w window) current(now int64, length int64) int32 {
	if w.start == 0 || now-w.start >= length {
		return 0
	}
	return w.count
}
