package resolver

import (
	"container/list"
	"sync"
	"time"
)

type cacheKey struct {
	name  string // lower-case, fully qualified
	qtype uint16
}

// cache is a bounded LRU table of answers; an expired entry is dropped
// when it is next read or pushed out by newer ones.
type cache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently used; values are *entry
	byKey map[cacheKey]*list.Element
}

type entry struct {
	key cacheKey
	ans *answer
}

func newCache(max int) *cache {
	return &cache{max: max, order: list.New(), byKey: make(map[cacheKey]*list.Element)}
}

func (c *cache) get(k cacheKey, now time.Time) (*answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.ans.expires) {
		c.order.Remove(el)
		delete(c.byKey, k)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.ans, true
}

func (c *cache) put(k cacheKey, a *answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[k]; ok {
		el.Value.(*entry).ans = a
		c.order.MoveToFront(el)
		return
	}
	c.byKey[k] = c.order.PushFront(&entry{k, a})
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.byKey, old.Value.(*entry).key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
