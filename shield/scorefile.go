package shield

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"sort"
	"time"
)

// reputationFile is the name of the saved score tables inside
// Options.StateDir (JSON, written atomically every SaveInterval and on
// Close). Each node of a cluster keeps its own.
const reputationFile = "shield-reputation.json"

// savedReputation is the file's form: every record with its parts by
// input name, as of At.
type savedReputation struct {
	Version int         `json:"version"`
	Saved   time.Time   `json:"saved"`
	Addrs   []savedRecs `json:"addresses"`
	Nets    []savedRecs `json:"networks"`
}

type savedRecs struct {
	Prefix netip.Prefix       `json:"prefix"`
	At     int64              `json:"at"` // unix nanoseconds
	Parts  map[string]float64 `json:"parts"`
}

func saveRec(p netip.Prefix, r *repRec) (savedRecs, bool) {
	if len(r.parts) == 0 {
		return savedRecs{}, false
	}
	sr := savedRecs{Prefix: p, At: r.at, Parts: make(map[string]float64, len(r.parts))}
	for _, part := range r.parts {
		sr.Parts[part.in.String()] = part.v
	}
	return sr, true
}

// saveReputation writes the score tables to the state folder.
func (s *Shield) saveReputation() error {
	if s.stateDir == "" {
		return nil
	}
	out := savedReputation{Version: 1, Saved: s.now()}
	s.repAddrs.each(func(a netip.Addr, r *repRec) bool {
		if sr, ok := saveRec(hostPrefix(a), r); ok {
			out.Addrs = append(out.Addrs, sr)
		}
		return true
	})
	s.repNets.each(func(p netip.Prefix, r *repRec) bool {
		if sr, ok := saveRec(p, r); ok {
			out.Nets = append(out.Nets, sr)
		}
		return true
	})
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.stateDir, reputationFile, data, "shield reputation")
}

// loadReputation reads the saved score tables back; a missing file is a
// fresh start. Parts of inputs this process does not know are dropped,
// and records decay from when they were saved.
func (s *Shield) loadReputation() error {
	if s.stateDir == "" {
		return nil
	}
	var in savedReputation
	if found, err := readJSONFile(filepath.Join(s.stateDir, reputationFile), &in, "shield reputation"); !found {
		return err
	}
	ns := s.now().UnixNano()
	hl := s.cfg().Reputation.HalfLife.Nanoseconds()
	load := func(sr savedRecs, do func(fn func(r *repRec, _ bool))) {
		if sr.At <= 0 || sr.At > ns {
			sr.At = ns // a clock set back: no decay rather than growth
		}
		do(func(r *repRec, _ bool) {
			*r = repRec{at: sr.At}
			for name, v := range sr.Parts {
				if in, ok := repInputNamed(name); ok && v == v && v != 0 {
					r.add(in, v)
				}
			}
			r.decay(ns, hl)
		})
	}
	for _, sr := range in.Addrs {
		if sr.Prefix.IsValid() && sr.Prefix.IsSingleIP() {
			a := unmap(sr.Prefix.Addr())
			load(sr, func(fn func(*repRec, bool)) { s.repAddrs.do(a, true, fn) })
		}
	}
	for _, sr := range in.Nets {
		if sr.Prefix.IsValid() {
			p := canonPrefix(sr.Prefix)
			load(sr, func(fn func(*repRec, bool)) { s.repNets.do(p, true, fn) })
		}
	}
	return nil
}

// ReadWorstScores returns the n lowest scores (below zero) of addresses
// and of networks that a stopped shield saved in stateDir, decayed to now
// with cfg's half-life, for tools that run while the server is down. A
// missing file gives none.
func ReadWorstScores(stateDir string, cfg Config, n int, now time.Time) (addrs, nets []Score, err error) {
	var in savedReputation
	if _, err := readJSONFile(filepath.Join(stateDir, reputationFile), &in, "shield reputation"); err != nil {
		return nil, nil, err
	}
	ns, hl := now.UnixNano(), cfg.Reputation.HalfLife.Nanoseconds()
	worstOf := func(recs []savedRecs) []Score {
		var out []Score
		for _, sr := range recs {
			r := repRec{at: min(sr.At, ns)}
			for name, v := range sr.Parts {
				if in, ok := repInputNamed(name); ok && v == v {
					r.add(in, v)
				}
			}
			if sc := scoreOf(sr.Prefix, &r, ns, hl); sc.Score < 0 {
				out = append(out, sc)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Score < out[j].Score })
		return out[:min(len(out), max(n, 0))]
	}
	return worstOf(in.Addrs), worstOf(in.Nets), nil
}
