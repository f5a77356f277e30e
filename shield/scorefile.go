package shield

import (
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

// saveReputation writes the score tables to the state folder in
// savedReputation's form. The records are copied out of the tables first
// (the shard locks are the accept path's) and written a record at a time
// (statewriter.go says why not json.Marshal).
func (s *Shield) saveReputation() error {
	if s.stateDir == "" {
		return nil
	}
	addrs := newRepCopy(s.repAddrs.len())
	s.repAddrs.each(func(k netip.Addr, r *repRec) bool {
		addrs.add(hostPrefix(k), r)
		return true
	})
	nets := newRepCopy(s.repNets.len())
	s.repNets.each(func(k netip.Prefix, r *repRec) bool {
		nets.add(k, r)
		return true
	})
	sw, err := newStateWriter(s.stateDir, reputationFile, "shield reputation")
	if err != nil {
		return err
	}
	sw.b = append(sw.b, `{"version":1,"saved":`...)
	sw.b = appendJSONTime(sw.b, s.now())
	write := func(c *repCopy) {
		for i, r := range c.recs {
			sw.sep(i)
			sw.b = appendRep(sw.b, r.p, r.at, c.parts[r.lo:r.hi])
			sw.spill()
		}
	}
	sw.raw(`,"addresses":[`)
	write(addrs)
	sw.raw(`],"networks":[`)
	write(nets)
	sw.raw("]}")
	return sw.commit()
}

// repCopy is a score table's records with parts, copied out for a save:
// keys and times, and every record's parts in one shared slice.
type repCopy struct {
	recs  []repCopied
	parts []repPart
}

type repCopied struct {
	p      netip.Prefix
	at     int64
	lo, hi int // the record's parts in repCopy.parts
}

func newRepCopy(n int) *repCopy {
	return &repCopy{recs: make([]repCopied, 0, n), parts: make([]repPart, 0, 2*n)}
}

// add copies r unless it has no parts (nothing to save).
func (c *repCopy) add(p netip.Prefix, r *repRec) {
	if len(r.parts) == 0 {
		return
	}
	lo := len(c.parts)
	c.parts = append(c.parts, r.parts...)
	c.recs = append(c.recs, repCopied{p: p, at: r.at, lo: lo, hi: len(c.parts)})
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
