package shield

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The Shield and its StateStore: the local snapshot (bans, offenders,
// known-good, lockdown) is what every decision reads; the store is loaded
// at start, written through a bounded queue, and watched for other nodes'
// changes. See StateStore for the contract.

// storeQueue bounds the writes waiting for the store.
const storeQueue = 4096

// storeTimeout bounds one store call of the writer.
const storeTimeout = 5 * time.Second

// storeBatch is how many queued writes share one storeTimeout.
const storeBatch = 256

// storeOp is one queued store call.
type storeOp func(ctx context.Context, st StateStore) error

// openStore opens the store (Options.Store, or a LocalStore on
// Options.StateDir), loads it into the local snapshot and starts watching
// it and writing to it.
func (s *Shield) openStore(opts Options) error {
	st := opts.Store
	if st == nil {
		ls, err := OpenLocalStore(opts.StateDir, LocalStoreOptions{Capacity: s.cfg().TableSize, Now: s.now})
		if err != nil {
			return err
		}
		st, s.ownStore = ls, true
	}
	s.store = st
	s.storeQ = make(chan storeOp, storeQueue)
	s.stopWatch = st.Watch(s.applyChange) // before Load: nothing is missed, a change seen twice is applied twice
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	state, err := st.Load(ctx)
	cancel()
	if err != nil {
		s.stopWatch()
		if s.ownStore {
			st.Close()
		}
		return err
	}
	s.applyState(state)
	if state.Lockdown {
		s.lockdown.Store(true)
	}
	s.wg.Add(1)
	go s.storeWriter()
	if opts.Store != nil {
		// A store given by the caller is shared with other nodes (a store
		// the Shield opened itself is this process's alone): count
		// behaviour across nodes.
		s.counts = newSharedCounts(s.cfg().TableSize)
		s.wg.Add(1)
		go s.counterLoop()
	}
	return nil
}

// closeStore stops watching, lets the writer drain (the caller waited for
// it), flushes and, when the Shield opened the store, closes it.
func (s *Shield) closeStore() error {
	s.stopWatch()
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	err := s.store.Flush(ctx)
	if s.ownStore {
		if cerr := s.store.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// toStore queues a store write; a full queue drops it (counted) rather than
// make a session wait.
func (s *Shield) toStore(op storeOp) {
	select {
	case s.storeQ <- op:
	default:
		s.storeDropped.Add(1)
	}
}

// storeWriter runs the queued writes in order until Close, then drains.
func (s *Shield) storeWriter() {
	defer s.wg.Done()
	for {
		select {
		case op := <-s.storeQ:
			// A batch of queued writes shares one deadline: a stuck
			// store fails the rest of the batch fast instead of holding
			// every write for a full timeout.
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			s.runStoreOp(ctx, op)
		batch:
			for range storeBatch {
				select {
				case op = <-s.storeQ:
					s.runStoreOp(ctx, op)
				default:
					break batch
				}
			}
			cancel()
		case <-s.closed:
			// Drain within one storeTimeout in all, so a stuck store
			// cannot hold Close for a timeout per queued write.
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			defer cancel()
			for {
				select {
				case op := <-s.storeQ:
					if ctx.Err() != nil {
						s.storeDropped.Add(1)
						continue
					}
					s.runStoreOp(ctx, op)
				default:
					return
				}
			}
		}
	}
}

func (s *Shield) runStoreOp(ctx context.Context, op storeOp) {
	if err := op(ctx, s.store); err != nil {
		s.storeFailed(err)
	}
}

// storeFailed counts a failed store call and logs it, once per interval.
func (s *Shield) storeFailed(err error) {
	s.storeErrors.Add(1)
	// One line per interval, not one per event.
	now := s.now()
	s.storeLogMu.Lock()
	quiet := now.Sub(s.storeLogged) < s.cfg().LogInterval
	if !quiet {
		s.storeLogged = now
	}
	s.storeLogMu.Unlock()
	if !quiet {
		s.log.Error("shield store write failed", "err", err, "errors", s.storeErrors.Load(), "dropped", s.storeDropped.Load())
	}
}

// flushStore queues a Flush behind the pending writes.
func (s *Shield) flushStore() {
	s.toStore(func(ctx context.Context, st StateStore) error {
		if err := st.Flush(ctx); err != nil {
			s.log.Error("shield save failed", "err", err)
		}
		return nil
	})
}

func (b *ban) record() BanRecord {
	return BanRecord{Prefix: b.prefix, Reason: b.reason, Action: b.action, Manual: b.manual,
		Temporary: b.decision.Temporary, Created: b.created, Expires: b.expires, Count: b.count, Node: b.node}
}

// banFromRecord turns a stored ban into a local one, within this Shield's
// config (a lowered ban_max_ttl, a full table), or nil.
func (s *Shield) banFromRecord(r BanRecord, now time.Time) *ban {
	if !r.Prefix.IsValid() || !now.Before(r.Expires) {
		return nil
	}
	ttl := r.Expires.Sub(r.Created)
	if !r.Manual && ttl > s.cfg().BanMaxTTL {
		ttl = s.cfg().BanMaxTTL // the config may have lowered it since
	}
	if r.Action == Allow || r.Action > Tarpit {
		r.Action = s.cfg().BanAction
	}
	if r.Reason == "" {
		r.Reason = "manual"
	}
	b := newBan(canonPrefix(r.Prefix), r.Reason, r.Action, r.Temporary, r.Manual, r.Created, ttl, max(r.Count, 1))
	b.node = r.Node
	if !now.Before(b.expires) {
		return nil
	}
	return b
}

// applyState loads a whole state into the local snapshot. Local bans the
// store lacks (a shared store restarted empty) are written back.
func (s *Shield) applyState(st State) {
	now := s.now()
	s.banMu.Lock()
	t := s.bans.Load()
	inStore := make(map[netip.Prefix]bool, len(st.Bans))
	for _, r := range st.Bans {
		b := s.banFromRecord(r, now)
		if b == nil {
			continue
		}
		inStore[b.prefix] = true
		if old, ok := t.Get(b.prefix); ok {
			b.hits.Store(old.hits.Load())
		} else if t.Size() >= s.cfg().TableSize {
			continue
		}
		t = t.InsertPersist(b.prefix, b)
	}
	var republish []BanRecord
	for _, b := range t.All() {
		if !inStore[b.prefix] && now.Before(b.expires) {
			republish = append(republish, b.record())
		}
	}
	s.bans.Store(t)
	s.banMu.Unlock()
	for _, r := range republish {
		s.toStore(func(ctx context.Context, st StateStore) error { return st.PutBan(ctx, r) })
	}
	for _, o := range st.Offenders {
		s.applyOffender(o, now)
	}
	for _, g := range st.KnownGood {
		s.applyKnownGood(g.Addr, g.Until, now)
	}
}

func (s *Shield) applyOffender(o OffenderRecord, now time.Time) {
	if o.Prefix.IsValid() && now.Sub(o.Last) <= s.cfg().OffenderTTL {
		s.offenders.do(canonPrefix(o.Prefix), true, func(v *offender, _ bool) {
			*v = offender{count: max(o.Count, 0), last: o.Last.UnixNano()}
		})
	}
}

func (s *Shield) applyKnownGood(addr netip.Addr, until, now time.Time) {
	if addr.IsValid() && now.Before(until) {
		u := min(until.UnixNano(), now.Add(s.cfg().KnownGoodTTL).UnixNano())
		s.knownGood.do(unmap(addr), true, func(v *int64, _ bool) { *v = u })
	}
}

// applyChange applies another node's change to the local snapshot. A ban
// closes the connections it covers; nothing is written back.
func (s *Shield) applyChange(c Change) {
	now := s.now()
	switch c.Kind {
	case ChangeBan:
		b := s.banFromRecord(c.Ban, now)
		if b == nil {
			return
		}
		s.banMu.Lock()
		t := s.bans.Load()
		if old, ok := t.Get(b.prefix); ok {
			b.hits.Store(old.hits.Load())
		} else if t.Size() >= s.cfg().TableSize {
			s.dropped++
			s.banMu.Unlock()
			return
		}
		s.bans.Store(t.InsertPersist(b.prefix, b))
		s.banMu.Unlock()
		s.forgetKnownGoodLocal(b.prefix)
		s.log.Info("shield ban", "addr", b.prefix.String(), "reason", b.reason, "ttl", b.expires.Sub(b.created).String(),
			"action", b.action.String(), "count", b.count, "from", "store")
		pol := s.pol.Load()
		s.kick(func(cn *Conn) bool { return b.prefix.Contains(cn.addr) && !pol.exempt(cn.addr) }, nil, "ban")
	case ChangeUnban:
		s.banMu.Lock()
		t := s.bans.Load()
		b, ok := t.Get(canonPrefix(c.Prefix))
		if ok {
			s.bans.Store(t.DeletePersist(b.prefix))
		}
		s.banMu.Unlock()
		if ok {
			s.log.Info("shield unban", "addr", b.prefix.String(), "reason", b.reason, "cause", "store", "hits", b.hits.Load())
		}
	case ChangeOffender:
		s.applyOffender(c.Offender, now)
	case ChangeKnownGood:
		s.applyKnownGood(c.Addr, c.Until, now)
	case ChangeRevokeKnownGood:
		s.forgetKnownGoodLocal(canonPrefix(c.Prefix))
	case ChangeLockdown:
		s.setLockdown(c.Lockdown)
	case ChangeAccountFailure:
		if c.Account != "" && len(c.Account) <= 320 && now.Sub(c.At) < s.cfg().AccountDelayWindow {
			s.countAccountFailure(strings.ToLower(c.Account), c.At)
		}
	case ChangeResync:
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		st, err := s.store.Load(ctx)
		cancel()
		if err != nil {
			s.log.Error("shield store resync failed", "err", err)
			return
		}
		s.applyState(st)
		s.setLockdown(st.Lockdown || s.cfg().Lockdown)
	}
}

// ReadBans returns the bans a stopped shield saved in stateDir that are
// still in force at now, as Bans would list them (without the refusals
// counted since, which are not saved), for tools that run while the
// server is down.
func ReadBans(stateDir string, now time.Time) ([]BanInfo, error) {
	path := filepath.Join(stateDir, stateFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("shield state: %w", err)
	}
	var st persisted
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("shield state %s: %w", path, err)
	}
	var out []BanInfo
	for _, pb := range st.Bans {
		if !pb.Prefix.IsValid() || !now.Before(pb.Expires) {
			continue
		}
		out = append(out, BanInfo{Prefix: canonPrefix(pb.Prefix), Reason: pb.Reason, Action: pb.Action, Manual: pb.Manual,
			Created: pb.Created, Expires: pb.Expires, Count: max(pb.Count, 1), Node: pb.Node})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}
