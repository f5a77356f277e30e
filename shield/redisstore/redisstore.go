// Package redisstore is a shield.StateStore on Redis (or Valkey, which
// speaks the same protocol): several agua nodes, or any services built on
// the shield, share one set of bans, offender history, known-good
// addresses and lockdown. It imports nothing mail-specific.
//
// # Layout
//
// Under a key prefix (Options.Prefix, default "agua:shield:"):
//
//	ban:<prefix>     JSON BanRecord, expiring at its Expires (PXAT)     the truth
//	bans             sorted set of ban prefixes, score = Expires (ms)   the index Load walks
//	unban:<prefix>   time of an unban, expiring with the ban it lifted  a tombstone
//	off:<prefix>     JSON OffenderRecord, expiring at its Expires
//	offs             sorted set of offender prefixes, score = Expires
//	kg:<addr>        known-good until (ms), expiring then
//	kgs              sorted set of known-good addresses, score = until
//	kgx              sorted set of the same addresses by address, score 0, member "4"|"6" + hex + "|" + addr (knowngood.go)
//	lockdown         "1" while lockdown is on (no expiry)
//	cnt:<name>:<subject>:<k>  shared behaviour counter of window k, expiring 2 windows after its last add
//	nodes            hash: node name → last heartbeat (ms)
//	banlog           stream of bans and unbans (JSON shield.BanEvent), capped near banLogMax, for cluster reports
//	events           the pub/sub channel of changes
//
// Every write is one Lua script or MULTI that changes the keys and
// PUBLISHes the change on the events channel, so a subscriber never sees a
// change before the key holds it. Messages carry the writing handle's
// random id; a handle ignores its own, so Watch never echoes to the writer.
// Sorted sets are pruned of expired members on every write and capped at
// Options.Capacity: a full ban index refuses a new ban (shield.ErrStoreFull);
// a full offender or known-good index forgets the records closest to
// expiry. One Redis instance (or a primary with replicas and Sentinel) is
// assumed, not Redis Cluster: the scripts touch keys they do not declare.
//
// # Faults
//
// Decisions never wait on Redis: the shield reads its local snapshot and
// writes through its own queue. When Redis cannot be reached, this store
// logs one line, reports Status().Connected = false, and keeps the writes
// it could not make (at most pendingMax, oldest dropped first) to replay in
// order when Redis is back. On every new subscription after the first
// (Redis restarted, network back) it replays them and delivers
// shield.ChangeResync: the shield reloads everything and writes back its
// active bans, which is how a Redis restarted empty learns them again. A
// ban that another node lifted while this one was cut off is not brought
// back by that write-back: the unban's tombstone refuses a ban created
// before it, and the store tells its own watchers to drop it.
//
// A first Load made before Redis was ever reached returns an empty state
// (the node starts enforcing its own decisions at once) and the resync on
// first contact loads the cluster's.
//
// Propagation takes one PUBLISH: the time for Redis to fan the message
// out and for the other nodes to apply it (BenchmarkPropagation measures it).
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agua-mail/agua/shield"
)

// Options configure a Store.
type Options struct {
	URL       string           // redis://[user:password@]host:port/db (rediss:// for TLS); required
	Prefix    string           // key prefix; "" = "agua:shield:"
	Node      string           // this node's name in the heartbeat; "" = no heartbeat
	Capacity  int              // most bans, offenders and known-good addresses kept (each); 0 = 1,000,000
	Heartbeat time.Duration    // heartbeat and connection check interval; 0 = 1 s
	Logger    *slog.Logger     // nil = slog.Default()
	Now       func() time.Time // clock for expiry; nil = time.Now
}

// ErrUnavailable wraps writes that could not reach Redis; they are kept
// and replayed when it is back.
var ErrUnavailable = errors.New("redis unavailable")

// pendingMax bounds the writes kept while Redis is unreachable.
const pendingMax = 10_000

// loadBatch is how many keys one MGET of Load reads.
const loadBatch = 1000

// nodeForget is how long a node that stopped its heartbeat stays listed.
const nodeForget = 24 * time.Hour

// Store is a shield.StateStore on Redis. Open it with Open.
type Store struct {
	rdb    *redis.Client
	opts   Options
	id     string // this handle's id in published messages
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	wmu      sync.Mutex // writes and their replay, in order
	pending  []func(ctx context.Context) error
	lost     atomic.Uint64 // pending writes dropped because the backlog was full
	npending atomic.Int64  // len(pending), for Status without waiting on wmu

	wtch     sync.Mutex // watchers
	watchers map[int]func(shield.Change)
	nextW    int
	deliver  sync.Mutex // one callback at a time

	connected  atomic.Bool
	ever       atomic.Bool // a subscription has succeeded once
	smu        sync.Mutex  // status below
	since      time.Time
	nodes      []Node
	sharedBans int64
	closeOnce  sync.Once

	psMu sync.Mutex
	ps   *redis.PubSub // the current subscription, closed by Close to end a blocked receive
}

// Open connects to Redis and subscribes to the change channel. An
// unreachable Redis is not an error (the store reconnects in the
// background); a malformed URL is.
func Open(opts Options) (*Store, error) {
	quietOnce.Do(func() { redis.SetLogger(debugLogger{}) })
	ropts, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("shield redis store: %w", err)
	}
	if opts.Prefix == "" {
		opts.Prefix = "agua:shield:"
	}
	if opts.Capacity <= 0 {
		opts.Capacity = 1_000_000
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// Short timeouts: a down Redis fails a write fast (it is kept for
	// replay) instead of holding the shield's writer.
	ropts.DialTimeout = min(opts.Heartbeat, time.Second)
	ropts.ReadTimeout = time.Second
	ropts.WriteTimeout = time.Second
	ropts.PoolTimeout = time.Second
	ropts.MaxRetries = 0
	var idb [8]byte
	rand.Read(idb[:])
	s := &Store{rdb: redis.NewClient(ropts), opts: opts, id: hex.EncodeToString(idb[:]),
		log: opts.Logger, watchers: make(map[int]func(shield.Change)), since: opts.Now()}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	ps := s.subscribe()
	if ps != nil {
		s.ever.Store(true)
		s.connected.Store(true)
	} else {
		s.log.Warn("shield cluster: redis unreachable at start, enforcing with local state", "redis", ropts.Addr)
	}
	s.wg.Add(1)
	go s.listen(ps)
	if opts.Node != "" {
		s.wg.Add(1)
		go s.heartbeat()
	}
	return s, nil
}

func (s *Store) key(kind, name string) string { return s.opts.Prefix + kind + name }
func (s *Store) channel() string              { return s.opts.Prefix + "events" }

// message is what travels on the events channel.
type message struct {
	Origin string        `json:"o"`
	Change shield.Change `json:"c"`
}

func (s *Store) encode(c shield.Change) string {
	data, _ := json.Marshal(message{Origin: s.id, Change: c})
	return string(data)
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// putBan stores a ban unless an unban newer than its creation is on
// record, prunes and caps the index, and publishes.
var putBan = redis.NewScript(`
local tomb = redis.call('GET', KEYS[3])
if tomb and tonumber(ARGV[6]) <= tonumber(tomb) then return 'stale' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 'full' end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*', 'e', ARGV[9])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 'ok'`)

// deleteBan removes a ban, leaves a tombstone as long as the ban had to
// live, and publishes.
var deleteBan = redis.NewScript(`
local ttl = redis.call('PTTL', KEYS[1])
local old = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ttl > 0 then redis.call('SET', KEYS[3], ARGV[2], 'PX', ttl) end
if old then
  local ev = cjson.decode(ARGV[5])
  local ok, b = pcall(cjson.decode, old)
  if ok and type(b) == 'table' and b.reason then ev.reason = b.reason end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'e', cjson.encode(ev))
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`)

// putCapped stores a record that expires, indexes it, forgets the records
// closest to expiry beyond the capacity, and publishes.
var putCapped = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #gone, 2 do redis.call('DEL', ARGV[8] .. gone[i]) end
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1`)

// write runs op, or keeps it for replay when Redis cannot be reached (or
// older writes are still waiting, so that order holds).
func (s *Store) write(ctx context.Context, op func(ctx context.Context) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(s.pending) == 0 {
		err := op(ctx)
		if err == nil || !unreachable(err) {
			return err
		}
		// The listener owns the connection state: it notices a Redis
		// that is gone, and replays this write when Redis answers.
	}
	if len(s.pending) >= pendingMax {
		s.pending = s.pending[1:]
		s.lost.Add(1)
	}
	s.pending = append(s.pending, op)
	s.npending.Store(int64(len(s.pending)))
	return fmt.Errorf("shield redis store: %w (kept for replay)", ErrUnavailable)
}

// unreachable reports whether err means Redis was not reached (rather
// than a reply error from Redis itself).
func unreachable(err error) bool {
	var rerr redis.Error
	return !errors.As(err, &rerr) || errors.Is(err, redis.ErrClosed)
}

// replay runs the kept writes in order; it stops at the first that cannot
// reach Redis.
func (s *Store) replay() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for len(s.pending) > 0 {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		err := s.pending[0](ctx)
		cancel()
		if err != nil && unreachable(err) {
			return
		}
		if err != nil {
			s.log.Error("shield cluster: replayed write refused", "err", err)
		}
		s.pending = s.pending[1:]
		s.npending.Store(int64(len(s.pending)))
	}
	s.pending = nil
}

// PutBan stores b, replacing any ban on exactly b.Prefix.
func (s *Store) PutBan(ctx context.Context, b shield.BanRecord) error {
	if !b.Prefix.IsValid() {
		return errors.New("shield redis store: invalid prefix")
	}
	b.Prefix = b.Prefix.Masked()
	now := s.opts.Now()
	if !now.Before(b.Expires) {
		return nil // already expired: nothing to keep or tell
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	member := b.Prefix.String()
	msg := s.encode(shield.Change{Kind: shield.ChangeBan, Ban: b})
	logged, err := json.Marshal(shield.BanLogEvent(b))
	if err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context) error {
		res, err := putBan.Run(ctx, s.rdb, []string{s.key("ban:", member), s.key("bans", ""), s.key("unban:", member), s.key("banlog", "")},
			member, data, ms(b.Expires), ms(now), s.opts.Capacity, ms(b.Created), s.channel(), msg, logged, banLogMax).Text()
		switch {
		case err != nil:
			return err
		case res == "full":
			return shield.ErrStoreFull
		case res == "stale":
			// Lifted on another node after it was made (we were cut off):
			// this node drops it too.
			s.notify(shield.Change{Kind: shield.ChangeUnban, Prefix: b.Prefix})
		}
		return nil
	})
}

// DeleteBan removes the ban on exactly p.
func (s *Store) DeleteBan(ctx context.Context, p netip.Prefix) error {
	p = p.Masked()
	member := p.String()
	now := s.opts.Now()
	msg := s.encode(shield.Change{Kind: shield.ChangeUnban, Prefix: p})
	logged, err := json.Marshal(shield.BanEvent{Time: now, Kind: "unban", Prefix: p, Cause: "manual", Node: s.opts.Node})
	if err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context) error {
		return deleteBan.Run(ctx, s.rdb, []string{s.key("ban:", member), s.key("bans", ""), s.key("unban:", member), s.key("banlog", "")},
			member, ms(now), s.channel(), msg, logged, banLogMax).Err()
	})
}

// banLogMax bounds the ban log stream (XADD MAXLEN ~, so Redis trims in
// whole nodes of the stream: a little more may stay).
const banLogMax = 100_000

// banLogSkew is how far before since BanLog starts reading the stream,
// whose entry ids are Redis's clock, not the nodes'.
const banLogSkew = time.Minute

// BanLog returns every node's bans and unbans since the given time, from
// the capped stream the ban scripts append to.
func (s *Store) BanLog(ctx context.Context, since time.Time) ([]shield.BanEvent, error) {
	start := "-"
	if !since.IsZero() {
		start = strconv.FormatInt(max(ms(since.Add(-banLogSkew)), 0), 10)
	}
	msgs, err := s.rdb.XRangeN(ctx, s.key("banlog", ""), start, "+", banLogMax).Result()
	if err != nil {
		return nil, err
	}
	var out []shield.BanEvent
	for _, m := range msgs {
		v, _ := m.Values["e"].(string)
		var e shield.BanEvent
		if json.Unmarshal([]byte(v), &e) != nil || !e.Prefix.IsValid() || e.Time.Before(since) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Bans returns the unexpired bans.
func (s *Store) Bans(ctx context.Context) ([]shield.BanRecord, error) {
	var bans []shield.BanRecord
	err := s.scan(ctx, "bans", "ban:", func(_ string, v string) {
		var b shield.BanRecord
		if json.Unmarshal([]byte(v), &b) == nil && b.Prefix.IsValid() {
			bans = append(bans, b)
		}
	})
	return bans, err
}

// scan reads the records of an index whose score is still in the future,
// loadBatch keys per MGET.
func (s *Store) scan(ctx context.Context, index, kind string, fn func(member, value string)) error {
	members, err := s.rdb.ZRangeByScore(ctx, s.key(index, ""), &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(ms(s.opts.Now()), 10), Max: "+inf"}).Result()
	if err != nil {
		return err
	}
	for len(members) > 0 {
		n := min(len(members), loadBatch)
		keys := make([]string, n)
		for i, m := range members[:n] {
			keys[i] = s.key(kind, m)
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			if str, ok := v.(string); ok {
				fn(members[i], str)
			}
		}
		members = members[n:]
	}
	return nil
}

// putCapped runs the putCapped script for one record.
func (s *Store) putCapped(ctx context.Context, index, kind, member, value string, expires time.Time, c shield.Change) error {
	now := s.opts.Now()
	if !now.Before(expires) {
		return nil
	}
	msg := s.encode(c)
	return s.write(ctx, func(ctx context.Context) error {
		return putCapped.Run(ctx, s.rdb, []string{s.key(kind, member), s.key(index, "")},
			member, value, ms(expires), ms(now), s.opts.Capacity, s.channel(), msg, s.key(kind, "")).Err()
	})
}

// PutOffender stores the escalation history of o.Prefix.
func (s *Store) PutOffender(ctx context.Context, o shield.OffenderRecord) error {
	if !o.Prefix.IsValid() {
		return errors.New("shield redis store: invalid prefix")
	}
	o.Prefix = o.Prefix.Masked()
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return s.putCapped(ctx, "offs", "off:", o.Prefix.String(), string(data), o.Expires,
		shield.Change{Kind: shield.ChangeOffender, Offender: o})
}

// Offender returns the unexpired history of exactly p.
func (s *Store) Offender(ctx context.Context, p netip.Prefix) (shield.OffenderRecord, bool, error) {
	v, err := s.rdb.Get(ctx, s.key("off:", p.Masked().String())).Result()
	if errors.Is(err, redis.Nil) {
		return shield.OffenderRecord{}, false, nil
	}
	if err != nil {
		return shield.OffenderRecord{}, false, err
	}
	var o shield.OffenderRecord
	if err := json.Unmarshal([]byte(v), &o); err != nil {
		return o, false, fmt.Errorf("shield redis store: offender %s: %w", p, err)
	}
	return o, s.opts.Now().Before(o.Expires), nil
}

// AddAccountFailure tells the other nodes of a failed login; nothing is
// stored.
func (s *Store) AddAccountFailure(ctx context.Context, account string, at time.Time) error {
	msg := s.encode(shield.Change{Kind: shield.ChangeAccountFailure, Account: account, At: at})
	// Not kept for replay: a late failure is worth nothing.
	return s.rdb.Publish(ctx, s.channel(), msg).Err()
}

// addCounts adds to counters and answers each with its sliding total
// and whether this call crossed its limit (then the counter is forgotten,
// atomically, so exactly one caller crosses). ARGV: the counter key
// prefix, then 8 per count: name:subject, window index k, k-1, window ms,
// ms elapsed in window k, events to add, reset (1/0), limit (0 = none).
var addCounts = redis.NewScript(`
local out = {}
for i = 2, #ARGV, 8 do
  local cur = ARGV[1] .. ARGV[i] .. ':' .. ARGV[i+1]
  local prev = ARGV[1] .. ARGV[i] .. ':' .. ARGV[i+2]
  local w, elapsed = tonumber(ARGV[i+3]), tonumber(ARGV[i+4])
  local add, limit = tonumber(ARGV[i+5]), tonumber(ARGV[i+7])
  if ARGV[i+6] == '1' then redis.call('DEL', cur, prev) end
  local c
  if add > 0 then
    c = redis.call('INCRBY', cur, add)
    redis.call('PEXPIRE', cur, 2 * w)
  else
    c = tonumber(redis.call('GET', cur) or '0')
  end
  local total = c
  local p = tonumber(redis.call('GET', prev) or '0')
  if p > 0 and elapsed < w then total = c + math.floor(p * (w - elapsed) / w) end
  local crossed = 0
  if add > 0 and limit > 0 and total >= limit then
    redis.call('DEL', cur, prev)
    crossed = 1
  end
  out[#out + 1] = total
  out[#out + 1] = crossed
end
return out`)

// countBatch bounds the counts of one script call, so one call never
// holds Redis for long (Lua scripts run alone).
const countBatch = 500

// AddCounts adds to the shared behaviour counters (see
// shield.StateStore.AddCounts): one script call per countBatch counts.
// Not kept for replay: a count that could not be added is lost, which
// lets an attacker a few more tries and never refuses anyone.
func (s *Store) AddCounts(ctx context.Context, at time.Time, counts []shield.Count) ([]shield.CountTotal, error) {
	out := make([]shield.CountTotal, 0, len(counts))
	for len(counts) > 0 {
		batch := counts[:min(len(counts), countBatch)]
		counts = counts[len(batch):]
		args := make([]any, 1, 1+8*len(batch))
		args[0] = s.key("cnt:", "")
		for _, c := range batch {
			w := max(c.Window, time.Millisecond)
			k, elapsed := shield.CounterWindow(at, w)
			reset := "0"
			if c.Reset {
				reset = "1"
			}
			args = append(args, c.Name+":"+c.Subject.Masked().String(), k, k-1, w.Milliseconds(),
				elapsed.Milliseconds(), max(c.Add, 0), reset, max(c.Limit, 0))
		}
		res, err := addCounts.Run(ctx, s.rdb, nil, args...).Int64Slice()
		if err != nil {
			return nil, err
		}
		if len(res) != 2*len(batch) {
			return nil, fmt.Errorf("shield redis store: %d counter replies for %d counts", len(res), len(batch))
		}
		for i := range batch {
			out = append(out, shield.CountTotal{Total: res[2*i], Crossed: res[2*i+1] == 1})
		}
	}
	return out, nil
}

// SetLockdown turns lockdown on or off for every node.
func (s *Store) SetLockdown(ctx context.Context, on bool) error {
	msg := s.encode(shield.Change{Kind: shield.ChangeLockdown, Lockdown: on})
	return s.write(ctx, func(ctx context.Context) error {
		_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			if on {
				pipe.Set(ctx, s.key("lockdown", ""), "1", 0)
			} else {
				pipe.Del(ctx, s.key("lockdown", ""))
			}
			pipe.Publish(ctx, s.channel(), msg)
			return nil
		})
		return err
	})
}

// Lockdown reports whether lockdown is on.
func (s *Store) Lockdown(ctx context.Context) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.key("lockdown", "")).Result()
	return n > 0, err
}

// Load returns every unexpired record and the lockdown flag. Before Redis
// was ever reached it returns an empty state (see the package doc).
func (s *Store) Load(ctx context.Context) (shield.State, error) {
	st, err := s.load(ctx)
	if err != nil && unreachable(err) && !s.ever.Load() {
		return shield.State{}, nil
	}
	return st, err
}

func (s *Store) load(ctx context.Context) (shield.State, error) {
	var st shield.State
	var err error
	if st.Bans, err = s.Bans(ctx); err != nil {
		return st, err
	}
	err = s.scan(ctx, "offs", "off:", func(_, v string) {
		var o shield.OffenderRecord
		if json.Unmarshal([]byte(v), &o) == nil && o.Prefix.IsValid() {
			st.Offenders = append(st.Offenders, o)
		}
	})
	if err != nil {
		return st, err
	}
	err = s.scan(ctx, "kgs", "kg:", func(m, v string) {
		a, aerr := netip.ParseAddr(m)
		u, uerr := strconv.ParseInt(v, 10, 64)
		if aerr == nil && uerr == nil {
			st.KnownGood = append(st.KnownGood, shield.KnownGoodRecord{Addr: a, Until: time.UnixMilli(u).UTC()})
		}
	})
	if err != nil {
		return st, err
	}
	st.Lockdown, err = s.Lockdown(ctx)
	return st, err
}

// Watch calls fn for every change made through other handles.
func (s *Store) Watch(fn func(shield.Change)) (stop func()) {
	s.wtch.Lock()
	id := s.nextW
	s.nextW++
	s.watchers[id] = fn
	s.wtch.Unlock()
	return func() {
		s.wtch.Lock()
		delete(s.watchers, id)
		s.wtch.Unlock()
		s.deliver.Lock()   // wait for a running callback
		s.deliver.Unlock() //nolint:staticcheck // an empty critical section on purpose
	}
}

// notify calls the watchers with c, one at a time.
func (s *Store) notify(c shield.Change) {
	s.deliver.Lock()
	defer s.deliver.Unlock()
	s.wtch.Lock()
	fns := make([]func(shield.Change), 0, len(s.watchers))
	for _, fn := range s.watchers {
		fns = append(fns, fn)
	}
	s.wtch.Unlock()
	for _, fn := range fns {
		fn(c)
	}
}

// Flush reports whether writes are still waiting for Redis: what Redis
// acknowledged is as durable as its own persistence makes it.
func (s *Store) Flush(context.Context) error {
	s.wmu.Lock()
	n := len(s.pending)
	s.wmu.Unlock()
	if n > 0 {
		return fmt.Errorf("shield redis store: %d writes waiting: %w", n, ErrUnavailable)
	}
	return nil
}

// Close stops listening and the heartbeat and closes the connections.
// Writes still waiting for Redis are lost (the other nodes hold the same
// bans, and this node's own are written back by its next start's resync
// only if it still has them).
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.Flush(context.Background())
		s.cancel()
		s.psMu.Lock()
		if s.ps != nil {
			s.ps.Close()
		}
		s.psMu.Unlock()
		s.wg.Wait()
		if cerr := s.rdb.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

var _ shield.StateStore = (*Store)(nil)

// quietOnce makes go-redis log through slog at debug level: it logs every
// failed dial, while this store says once that Redis is unreachable.
var quietOnce sync.Once

type debugLogger struct{}

func (debugLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
