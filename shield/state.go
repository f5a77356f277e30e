package shield

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// stateFile is the name of the persisted state inside Options.StateDir.
const stateFile = "shield-state.json"

// persisted is the on-disk form of the shield's memory.
type persisted struct {
	Version   int             `json:"version"`
	Saved     time.Time       `json:"saved"`
	Bans      []persistedBan  `json:"bans"`
	Offenders []persistedOff  `json:"offenders"`
	KnownGood []persistedGood `json:"known_good"`
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
}

type persistedOff struct {
	Prefix netip.Prefix `json:"prefix"`
	Count  int          `json:"count"`
	Last   time.Time    `json:"last"`
}

type persistedGood struct {
	Addr  netip.Addr `json:"addr"`
	Until time.Time  `json:"until"`
}

// saveState writes the state atomically: a temporary file, fsync, rename,
// fsync of the folder.
func (s *Shield) saveState() error {
	now := s.now()
	st := persisted{Version: 1, Saved: now}
	for _, b := range s.bans.Load().All() {
		if now.Before(b.expires) {
			st.Bans = append(st.Bans, persistedBan{Prefix: b.prefix, Reason: b.reason, Action: b.action, Manual: b.manual,
				Temp: b.decision.Temporary, Created: b.created, Expires: b.expires, Count: b.count})
		}
	}
	ns := now.UnixNano()
	offTTL := s.cfg.OffenderTTL.Nanoseconds()
	s.offenders.each(func(p netip.Prefix, o *offender) bool {
		if ns-o.last > offTTL {
			return false
		}
		st.Offenders = append(st.Offenders, persistedOff{Prefix: p, Count: o.count, Last: time.Unix(0, o.last)})
		return true
	})
	s.knownGood.each(func(a netip.Addr, until *int64) bool {
		if *until <= ns {
			return false
		}
		st.KnownGood = append(st.KnownGood, persistedGood{Addr: a, Until: time.Unix(0, *until)})
		return true
	})
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return fmt.Errorf("shield state: %w", err)
	}
	f, err := os.CreateTemp(s.stateDir, stateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("shield state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.stateDir, stateFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("shield state: %w", err)
	}
	if d, err := os.Open(s.stateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// loadState restores bans, offenders and known-good addresses. A missing
// file is a fresh start; an unreadable one is an error, so an operator does
// not silently lose every ban.
func (s *Shield) loadState() error {
	data, err := os.ReadFile(filepath.Join(s.stateDir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("shield state: %w", err)
	}
	var st persisted
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("shield state %s: %w", filepath.Join(s.stateDir, stateFile), err)
	}
	now := s.now()
	s.banMu.Lock()
	t := s.bans.Load()
	for _, pb := range st.Bans {
		if !pb.Prefix.IsValid() || !now.Before(pb.Expires) || t.Size() >= s.cfg.TableSize {
			continue
		}
		ttl := pb.Expires.Sub(pb.Created)
		if !pb.Manual && ttl > s.cfg.BanMaxTTL {
			ttl = s.cfg.BanMaxTTL // the config may have lowered it since
		}
		if pb.Action == Allow || pb.Action > Tarpit {
			pb.Action = s.cfg.BanAction
		}
		if pb.Reason == "" {
			pb.Reason = "manual"
		}
		b := newBan(canonPrefix(pb.Prefix), pb.Reason, pb.Action, pb.Temp, pb.Manual, pb.Created, ttl, max(pb.Count, 1))
		if !now.Before(b.expires) {
			continue
		}
		t = t.InsertPersist(b.prefix, b)
	}
	s.bans.Store(t)
	s.banMu.Unlock()
	for _, o := range st.Offenders {
		if o.Prefix.IsValid() && now.Sub(o.Last) <= s.cfg.OffenderTTL {
			s.offenders.do(canonPrefix(o.Prefix), true, func(v *offender, _ bool) { *v = offender{count: max(o.Count, 0), last: o.Last.UnixNano()} })
		}
	}
	for _, g := range st.KnownGood {
		if g.Addr.IsValid() && now.Before(g.Until) {
			u := min(g.Until.UnixNano(), now.Add(s.cfg.KnownGoodTTL).UnixNano())
			s.knownGood.do(unmap(g.Addr), true, func(v *int64, _ bool) { *v = u })
		}
	}
	return nil
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
			Created: pb.Created, Expires: pb.Expires, Count: max(pb.Count, 1)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}
