package shield

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// banLogMax bounds a LocalStore's ban log.
const banLogMax = 10_000

// stateFile is the name of the persisted state inside Options.StateDir.
const stateFile = "shield-state.json"

// LocalStoreOptions configure a LocalStore.
type LocalStoreOptions struct {
	Capacity int              // most bans, offenders and known-good addresses kept (each); 0 = 100,000
	Now      func() time.Time // clock for expiry; nil = time.Now
}

// LocalStore is the default [StateStore]: the state in this process's
// memory, persisted in a folder as shield-state.json (temporary file, fsync,
// rename, fsync of the folder) by Flush and Close and read back when the
// folder is opened again.
//
// Every OpenLocalStore of the same folder in one process is a handle on the
// same state, like several nodes on one shared store: a change made through
// one handle reaches the others' Watch at once, before the writing call
// returns. Lockdown is written to the file at once, so a restarted process
// starts locked down if it was (or if Config.Lockdown says so).
type LocalStore struct {
	st *localState

	wmu      sync.Mutex // watchers
	watchers map[int]func(Change)
	nextW    int
	deliver  sync.Mutex // one callback at a time for this handle
	closed   bool
}

type localState struct {
	key string // absolute folder, "" = not shared, not persisted
	dir string
	now func() time.Time
	cap int

	mu        sync.Mutex
	bans      map[netip.Prefix]BanRecord
	offenders *lru[netip.Prefix, OffenderRecord]
	knownGood *netTable[time.Time]
	counters  *lru[counterKey, int64] // AddCounts, by window; old windows fall out of the LRU
	banLog    []BanEvent              // BanLog, at most banLogMax, oldest first
	lockdown  bool
	handles   map[*LocalStore]struct{}

	saveMu sync.Mutex // one Flush at a time
}

// localStates are the states open in this process, by folder.
var localStates = struct {
	mu sync.Mutex
	m  map[string]*localState
}{m: make(map[string]*localState)}

// OpenLocalStore opens the state persisted in dir ("" = memory only, never
// shared). A folder already open in this process gives another handle on
// the same state (opts of the first opener apply). A missing file is a
// fresh start; an unreadable one is an error, so an operator does not
// silently lose every ban.
func OpenLocalStore(dir string, opts LocalStoreOptions) (*LocalStore, error) {
	key := ""
	if dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("shield state: %w", err)
		}
		key = abs
	}
	localStates.mu.Lock()
	defer localStates.mu.Unlock()
	st := localStates.m[key]
	if st == nil || key == "" {
		if opts.Capacity <= 0 {
			opts.Capacity = 100_000
		}
		if opts.Now == nil {
			opts.Now = time.Now
		}
		st = &localState{key: key, dir: dir, now: opts.Now, cap: opts.Capacity,
			bans:      make(map[netip.Prefix]BanRecord),
			offenders: newLRU[netip.Prefix, OffenderRecord](opts.Capacity, hashPrefix),
			knownGood: newNetTable[time.Time](opts.Capacity),
			counters:  newLRU[counterKey, int64](2*opts.Capacity, hashCounter),
			handles:   make(map[*LocalStore]struct{})}
		if dir != "" {
			if err := st.load(); err != nil {
				return nil, err
			}
		}
		if key != "" {
			localStates.m[key] = st
		}
	}
	h := &LocalStore{st: st, watchers: make(map[int]func(Change))}
	st.mu.Lock()
	st.handles[h] = struct{}{}
	st.mu.Unlock()
	return h, nil
}

// persisted is the on-disk form of the state.
type persisted struct {
	Version   int             `json:"version"`
	Saved     time.Time       `json:"saved"`
	Bans      []persistedBan  `json:"bans"`
	Offenders []persistedOff  `json:"offenders"`
	KnownGood []persistedGood `json:"known_good"`
	Lockdown  bool            `json:"lockdown,omitempty"`
}

type persistedBan struct {
	Prefix  netip.Prefix `json:"prefix"`
	Reason  string       `json:"reason"`
	Action  Action       `json:"action"`
	Manual  bool         `json:"manual,omitempty"`
	Temp    bool         `json:"temporary,omitempty"`
	Created time.Time    `json:"created"`
	Expires time.Time    `json:"expires"`
	Count   int          `json:"count"`
	Node    string       `json:"node,omitempty"`
}

type persistedOff struct {
	Prefix  netip.Prefix `json:"prefix"`
	Count   int          `json:"count"`
	Last    time.Time    `json:"last"`
	Expires time.Time    `json:"expires,omitzero"` // absent in files of version 1
}

type persistedGood struct {
	Addr  netip.Addr `json:"addr"`
	Until time.Time  `json:"until"`
}

// legacyOffenderTTL dates offender records of files that did not store
// their expiry (the default Config.OffenderTTL; the Shield applies its own
// when it loads them).
const legacyOffenderTTL = 7 * 24 * time.Hour

func (st *localState) load() error {
	var p persisted
	if found, err := readJSONFile(filepath.Join(st.dir, stateFile), &p, "shield state"); !found {
		return err
	}
	now := st.now()
	for _, b := range p.Bans {
		if b.Prefix.IsValid() && now.Before(b.Expires) && len(st.bans) < st.cap {
			b.Prefix = canonPrefix(b.Prefix)
			st.bans[b.Prefix] = BanRecord{Prefix: b.Prefix, Reason: b.Reason, Action: b.Action, Manual: b.Manual,
				Temporary: b.Temp, Created: b.Created, Expires: b.Expires, Count: b.Count, Node: b.Node}
		}
	}
	for _, o := range p.Offenders {
		if o.Expires.IsZero() {
			o.Expires = o.Last.Add(legacyOffenderTTL)
		}
		if o.Prefix.IsValid() && now.Before(o.Expires) {
			rec := OffenderRecord{Prefix: canonPrefix(o.Prefix), Count: o.Count, Last: o.Last, Expires: o.Expires}
			st.offenders.do(rec.Prefix, true, func(v *OffenderRecord, _ bool) { *v = rec })
		}
	}
	for _, g := range p.KnownGood {
		if g.Addr.IsValid() && now.Before(g.Until) {
			until := g.Until
			st.knownGood.do(unmap(g.Addr), true, func(v *time.Time, _ bool) { *v = until })
		}
	}
	st.lockdown = p.Lockdown
	return nil
}

// snapshot returns every unexpired record. Called under st.mu.
func (st *localState) snapshot() State {
	now := st.now()
	s := State{KnownGood: make([]KnownGoodRecord, 0, st.knownGood.len())}
	for p, b := range st.bans {
		if now.Before(b.Expires) {
			s.Bans = append(s.Bans, b)
		} else {
			delete(st.bans, p)
		}
	}
	st.offenders.each(func(_ netip.Prefix, o *OffenderRecord) bool {
		if !now.Before(o.Expires) {
			return false
		}
		s.Offenders = append(s.Offenders, *o)
		return true
	})
	st.knownGood.each(func(a netip.Addr, until *time.Time) bool {
		if !now.Before(*until) {
			return false
		}
		s.KnownGood = append(s.KnownGood, KnownGoodRecord{Addr: a, Until: *until})
		return true
	})
	s.Lockdown = st.lockdown
	return s
}

// change applies fn under the state lock and, when it reports a change,
// delivers c to every other handle's watchers.
func (h *LocalStore) change(c Change, fn func(st *localState) error) error {
	st := h.st
	st.mu.Lock()
	if h.closed {
		st.mu.Unlock()
		return errors.New("shield state store closed")
	}
	err := fn(st)
	var buf [4]*LocalStore
	others := buf[:0]
	for o := range st.handles {
		if o != h {
			others = append(others, o)
		}
	}
	st.mu.Unlock()
	if err != nil {
		return err
	}
	for _, o := range others {
		o.notify(c)
	}
	return nil
}

// notify calls h's watchers with c, one at a time.
func (h *LocalStore) notify(c Change) {
	h.deliver.Lock()
	defer h.deliver.Unlock()
	h.wmu.Lock()
	fns := make([]func(Change), 0, len(h.watchers))
	for _, fn := range h.watchers {
		fns = append(fns, fn)
	}
	h.wmu.Unlock()
	for _, fn := range fns {
		fn(c)
	}
}

// Load returns every unexpired record and the lockdown flag.
func (h *LocalStore) Load(context.Context) (State, error) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	return h.st.snapshot(), nil
}

// PutBan stores b, replacing any ban on exactly b.Prefix.
func (h *LocalStore) PutBan(_ context.Context, b BanRecord) error {
	if !b.Prefix.IsValid() {
		return errors.New("shield state: invalid prefix")
	}
	b.Prefix = canonPrefix(b.Prefix)
	return h.change(Change{Kind: ChangeBan, Ban: b}, func(st *localState) error {
		if _, ok := st.bans[b.Prefix]; !ok && len(st.bans) >= st.cap {
			now := st.now()
			for p, x := range st.bans {
				if !now.Before(x.Expires) {
					delete(st.bans, p)
				}
			}
			if len(st.bans) >= st.cap {
				return ErrStoreFull
			}
		}
		st.bans[b.Prefix] = b
		st.logBan(BanLogEvent(b))
		return nil
	})
}

// logBan appends to the ban log, forgetting the oldest beyond banLogMax.
// Called under st.mu.
func (st *localState) logBan(e BanEvent) {
	if len(st.banLog) >= banLogMax {
		st.banLog = append(st.banLog[:0], st.banLog[len(st.banLog)-banLogMax/2:]...)
	}
	st.banLog = append(st.banLog, e)
}

// BanLog returns the bans and unbans made through any handle since the
// given time (not persisted: this process's).
func (h *LocalStore) BanLog(_ context.Context, since time.Time) ([]BanEvent, error) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	var out []BanEvent
	for _, e := range h.st.banLog {
		if !e.Time.Before(since) {
			out = append(out, e)
		}
	}
	return out, nil
}

// DeleteBan removes the ban on exactly p.
func (h *LocalStore) DeleteBan(_ context.Context, p netip.Prefix) error {
	p = canonPrefix(p)
	return h.change(Change{Kind: ChangeUnban, Prefix: p}, func(st *localState) error {
		if b, ok := st.bans[p]; ok {
			delete(st.bans, p)
			st.logBan(BanEvent{Time: st.now(), Kind: "unban", Prefix: p, Reason: b.Reason, Cause: "manual"})
		}
		return nil
	})
}

// Bans returns the unexpired bans.
func (h *LocalStore) Bans(ctx context.Context) ([]BanRecord, error) {
	s, err := h.Load(ctx)
	return s.Bans, err
}

// PutOffender stores the escalation history of o.Prefix.
func (h *LocalStore) PutOffender(_ context.Context, o OffenderRecord) error {
	if !o.Prefix.IsValid() {
		return errors.New("shield state: invalid prefix")
	}
	o.Prefix = canonPrefix(o.Prefix)
	return h.change(Change{Kind: ChangeOffender, Offender: o}, func(st *localState) error {
		st.offenders.do(o.Prefix, true, func(v *OffenderRecord, _ bool) { *v = o })
		return nil
	})
}

// Offender returns the unexpired history of exactly p.
func (h *LocalStore) Offender(_ context.Context, p netip.Prefix) (OffenderRecord, bool, error) {
	var o OffenderRecord
	found := false
	now := h.st.now()
	h.st.offenders.do(canonPrefix(p), false, func(v *OffenderRecord, _ bool) {
		o, found = *v, now.Before(v.Expires)
	})
	return o, found, nil
}

// MarkKnownGood makes addr known-good until the given time.
func (h *LocalStore) MarkKnownGood(_ context.Context, addr netip.Addr, until time.Time) error {
	if !addr.IsValid() {
		return errors.New("shield state: invalid address")
	}
	addr = unmap(addr)
	return h.change(Change{Kind: ChangeKnownGood, Addr: addr, Until: until}, func(st *localState) error {
		st.knownGood.do(addr, true, func(v *time.Time, _ bool) { *v = until })
		return nil
	})
}

// RevokeKnownGood takes known-good status from every address in p.
func (h *LocalStore) RevokeKnownGood(_ context.Context, p netip.Prefix) error {
	p = canonPrefix(p)
	return h.change(Change{Kind: ChangeRevokeKnownGood, Prefix: p}, func(st *localState) error {
		// Every behaviour ban comes here, under st.mu: the network
		// index, not a walk over up to table_size known-good addresses
		// (netTable).
		st.knownGood.deleteIn(p)
		return nil
	})
}

// KnownGood returns until when addr is known-good, if it is.
func (h *LocalStore) KnownGood(_ context.Context, addr netip.Addr) (time.Time, bool, error) {
	var until time.Time
	h.st.knownGood.do(unmap(addr), false, func(v *time.Time, _ bool) { until = *v })
	return until, h.st.now().Before(until), nil
}

// AddAccountFailure passes a failed login on to the other handles.
func (h *LocalStore) AddAccountFailure(_ context.Context, account string, at time.Time) error {
	return h.change(Change{Kind: ChangeAccountFailure, Account: account, At: at}, func(*localState) error { return nil })
}

// counterKey is one shared counter in one window.
type counterKey struct {
	name    string
	subject netip.Prefix
	k       int64
}

func hashCounter(c counterKey) uint64 {
	return hashString(c.name) ^ hashPrefix(c.subject) ^ uint64(c.k)*0xff51afd7ed558ccd
}

// AddCounts adds to the shared counters of every handle on this state
// (see StateStore.AddCounts). Counters are not persisted: a restart
// forgets at most one window of counts.
func (h *LocalStore) AddCounts(_ context.Context, at time.Time, counts []Count) ([]CountTotal, error) {
	st := h.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if h.closed {
		return nil, errors.New("shield state store closed")
	}
	out := make([]CountTotal, len(counts))
	for i, c := range counts {
		if !c.Subject.IsValid() || c.Window <= 0 {
			continue
		}
		k, elapsed := CounterWindow(at, c.Window)
		cur := counterKey{c.Name, canonPrefix(c.Subject), k}
		prev := cur
		prev.k--
		if c.Reset {
			st.counters.delete(cur)
			st.counters.delete(prev)
		}
		var n, p int64
		st.counters.do(cur, c.Add > 0, func(v *int64, _ bool) { *v += c.Add; n = *v })
		st.counters.do(prev, false, func(v *int64, _ bool) { p = *v })
		out[i].Total = SlidingTotal(n, p, c.Window, elapsed)
		if c.Add > 0 && c.Limit > 0 && out[i].Total >= c.Limit {
			out[i].Crossed = true
			st.counters.delete(cur)
			st.counters.delete(prev)
		}
	}
	return out, nil
}

// SetLockdown turns lockdown on or off for every handle and writes the
// state file at once: lockdown is what an operator turns on in an attack,
// and a restart (or a crash) must not quietly turn it off.
func (h *LocalStore) SetLockdown(ctx context.Context, on bool) error {
	if err := h.change(Change{Kind: ChangeLockdown, Lockdown: on}, func(st *localState) error {
		st.lockdown = on
		return nil
	}); err != nil {
		return err
	}
	return h.Flush(ctx)
}

// Lockdown reports whether lockdown is on.
func (h *LocalStore) Lockdown(context.Context) (bool, error) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	return h.st.lockdown, nil
}

// Watch calls fn for every change made through other handles.
func (h *LocalStore) Watch(fn func(Change)) (stop func()) {
	h.wmu.Lock()
	id := h.nextW
	h.nextW++
	h.watchers[id] = fn
	h.wmu.Unlock()
	return func() {
		h.wmu.Lock()
		delete(h.watchers, id)
		h.wmu.Unlock()
		h.deliver.Lock()   // wait for a running callback
		h.deliver.Unlock() //nolint:staticcheck // an empty critical section on purpose
	}
}

// Flush writes the state file atomically: a temporary file, fsync, rename,
// fsync of the folder. Without a folder it does nothing.
func (h *LocalStore) Flush(context.Context) error {
	st := h.st
	if st.dir == "" {
		return nil
	}
	st.saveMu.Lock()
	defer st.saveMu.Unlock()
	st.mu.Lock()
	s := st.snapshot()
	st.mu.Unlock()
	// The file is persisted's form, written a record at a time
	// (statewriter.go says why not json.Marshal).
	sw, err := newStateWriter(st.dir, stateFile, "shield state")
	if err != nil {
		return err
	}
	sw.b = append(sw.b, `{"version":2,"saved":`...)
	sw.b = appendJSONTime(sw.b, st.now())
	sw.raw(`,"bans":[`)
	for i, b := range s.Bans {
		sw.sep(i)
		sw.value(persistedBan{Prefix: b.Prefix, Reason: b.Reason, Action: b.Action, Manual: b.Manual,
			Temp: b.Temporary, Created: b.Created, Expires: b.Expires, Count: b.Count, Node: b.Node})
	}
	sw.raw(`],"offenders":[`)
	for i, o := range s.Offenders {
		sw.sep(i)
		sw.value(persistedOff{Prefix: o.Prefix, Count: o.Count, Last: o.Last, Expires: o.Expires})
	}
	sw.raw(`],"known_good":[`)
	for i, g := range s.KnownGood {
		sw.sep(i)
		sw.b = appendGood(sw.b, g.Addr, g.Until)
		sw.spill()
	}
	sw.raw("]")
	if s.Lockdown {
		sw.raw(`,"lockdown":true`)
	}
	sw.raw("}")
	return sw.commit()
}

// readJSONFile decodes the JSON file at path into v; found is false when
// it is missing (no error: a fresh start) or unreadable (the error, which
// starts with what).
func readJSONFile(path string, v any, what string) (found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return true, nil
}

// Close flushes and releases the handle; the last handle of a folder
// forgets the state (the next OpenLocalStore reads the file).
func (h *LocalStore) Close() error {
	st := h.st
	st.mu.Lock()
	if h.closed {
		st.mu.Unlock()
		return nil
	}
	st.mu.Unlock()
	err := h.Flush(context.Background())
	localStates.mu.Lock()
	st.mu.Lock()
	h.closed = true
	delete(st.handles, h)
	if len(st.handles) == 0 && st.key != "" && localStates.m[st.key] == st {
		delete(localStates.m, st.key)
	}
	st.mu.Unlock()
	localStates.mu.Unlock()
	return err
}
