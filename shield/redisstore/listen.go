package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agua-mail/agua/shield"
)

// maxMessage bounds a change message; larger ones are not ours.
const maxMessage = 64 << 10

// subscribe subscribes to the change channel and waits for Redis to
// confirm; nil when Redis cannot be reached.
func (s *Store) subscribe() *redis.PubSub {
	ps := s.rdb.Subscribe(s.ctx, s.channel())
	if _, err := ps.ReceiveTimeout(s.ctx, s.opts.Heartbeat+time.Second); err != nil {
		ps.Close()
		return nil
	}
	s.psMu.Lock()
	defer s.psMu.Unlock()
	if s.ctx.Err() != nil { // Close came first
		ps.Close()
		return nil
	}
	s.ps = ps
	return ps
}

// listen delivers other handles' changes to the watchers until Close. It
// owns the subscription: when it breaks (an error, or two heartbeats
// without a pong) it subscribes again with backoff, replays the writes
// kept meanwhile and delivers ChangeResync.
func (s *Store) listen(ps *redis.PubSub) {
	defer s.wg.Done()
	backoff := 50 * time.Millisecond
	for s.ctx.Err() == nil {
		if ps == nil {
			if ps = s.subscribe(); ps == nil {
				select {
				case <-s.ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			backoff = 50 * time.Millisecond
			s.reconnected()
		}
		err := s.receive(ps)
		ps.Close()
		ps = nil
		if s.ctx.Err() == nil {
			s.setConnected(false, err)
		}
	}
	if ps != nil {
		ps.Close()
	}
}

// reconnected runs after a new subscription: writes kept while Redis was
// away go first, then every watcher reloads.
func (s *Store) reconnected() {
	s.ever.Store(true)
	s.setConnected(true, nil)
	s.replay()
	s.notify(shield.Change{Kind: shield.ChangeResync})
}

// receive delivers messages from ps until it fails.
func (s *Store) receive(ps *redis.PubSub) error {
	missed := 0
	for {
		m, err := ps.ReceiveTimeout(s.ctx, s.opts.Heartbeat)
		if err != nil {
			if s.ctx.Err() != nil {
				return err
			}
			if !isTimeout(err) || missed >= 2 {
				return err
			}
			missed++
			if err := ps.Ping(s.ctx); err != nil {
				return err
			}
			continue
		}
		missed = 0
		if s.npending.Load() > 0 { // a write failed while the subscription held
			s.replay()
		}
		switch m := m.(type) {
		case *redis.Message:
			s.handle(m.Payload)
		case *redis.Subscription:
			// go-redis resubscribed by itself after a broken connection:
			// changes may have been lost.
			if m.Kind == "subscribe" {
				s.reconnected()
			}
		}
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// handle decodes one message and delivers it unless this handle wrote it.
func (s *Store) handle(payload string) {
	if len(payload) > maxMessage {
		return
	}
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.Origin == s.id {
		return
	}
	switch m.Change.Kind {
	case shield.ChangeBan, shield.ChangeUnban, shield.ChangeOffender, shield.ChangeKnownGood,
		shield.ChangeRevokeKnownGood, shield.ChangeLockdown, shield.ChangeAccountFailure:
		s.notify(m.Change)
	}
}

// setConnected records the connection state and logs its changes, once
// per change rather than once per failed write.
func (s *Store) setConnected(on bool, err error) {
	if s.connected.Swap(on) == on {
		return
	}
	s.smu.Lock()
	s.since = s.opts.Now()
	s.smu.Unlock()
	if on {
		s.log.Info("shield cluster: redis reachable, resyncing", "node", s.opts.Node)
	} else {
		s.log.Warn("shield cluster: redis unreachable, enforcing with local state", "node", s.opts.Node, "err", err)
	}
}

// heartbeat writes this node's last-seen time every interval and reads
// every node's, for Status.
func (s *Store) heartbeat() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.Heartbeat)
	defer t.Stop()
	for {
		s.beat()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Store) beat() {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.Heartbeat)
	defer cancel()
	now := s.opts.Now()
	key := s.key("nodes", "")
	if err := s.rdb.HSet(ctx, key, s.opts.Node, ms(now)).Err(); err != nil {
		return // the listener notices and says so
	}
	all, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return
	}
	nodes := make([]Node, 0, len(all))
	for name, v := range all {
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		last := time.UnixMilli(t).UTC()
		if now.Sub(last) > nodeForget {
			s.rdb.HDel(ctx, key, name)
			continue
		}
		nodes = append(nodes, Node{Name: name, LastHeartbeat: last, Age: now.Sub(last).Round(time.Millisecond).String(),
			Alive: now.Sub(last) <= nodeAlive*s.opts.Heartbeat})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	bans, err := s.rdb.ZCount(ctx, s.key("bans", ""), "("+strconv.FormatInt(ms(now), 10), "+inf").Result()
	s.smu.Lock()
	s.nodes = nodes
	if err == nil {
		s.sharedBans = bans
	}
	s.smu.Unlock()
}

// nodeAlive is how many heartbeat intervals a node may miss and still be
// listed as alive.
const nodeAlive = 3

// Node is one node seen through its heartbeat.
type Node struct {
	Name          string    `json:"name"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Age           string    `json:"age"`   // since the heartbeat, when this node last read it
	Alive         bool      `json:"alive"` // heard within the last nodeAlive heartbeats
}

// Status is what `agua status` shows of the cluster.
type Status struct {
	Node      string    `json:"node"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`       // of the current connection state
	Nodes     []Node    `json:"nodes"`       // as of the last heartbeat this node read
	Bans      int64     `json:"shared_bans"` // bans in Redis, as of the last heartbeat
	Pending   int       `json:"pending"`     // writes waiting for Redis
	Lost      uint64    `json:"lost_writes"` // writes dropped because too many were waiting
}

// Status reports the connection and the nodes seen; it never waits on
// Redis.
func (s *Store) Status() Status {
	s.smu.Lock()
	st := Status{Node: s.opts.Node, Connected: s.connected.Load(), Since: s.since, Nodes: append([]Node(nil), s.nodes...),
		Bans: s.sharedBans}
	s.smu.Unlock()
	st.Pending = int(s.npending.Load())
	st.Lost = s.lost.Load()
	return st
}
