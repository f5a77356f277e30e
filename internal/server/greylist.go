package server

import (
	"context"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/greylist"
)

// greylistSaveEvery is how often the greylist table is saved when it
// changed (and at shutdown).
const greylistSaveEvery = time.Minute

// greyGate is the router's Greylist: the [greylist] table, kept whether
// greylisting is on or not so that a reload can turn it on or off live.
type greyGate struct {
	table   *greylist.Greylist
	path    string
	enabled atomic.Bool
	now     atomic.Pointer[func() time.Time] // the clock (tests)
}

// GreylistStatus is the greylist part of agua status.
type GreylistStatus struct {
	Enabled  bool `json:"enabled"`
	Triplets int  `json:"triplets"`
	Networks int  `json:"networks"`
}

func greylistPath(cfg config.Config) string { return filepath.Join(cfg.DataDir, "greylist.json") }

// openGreylist loads the table saved by the last run. A file that cannot
// be read is logged and replaced: greylisting starts over, nothing else.
func (s *Server) openGreylist() *greyGate {
	g := &greyGate{table: greylist.New(s.cfg.Greylist.Table()), path: greylistPath(s.cfg)}
	now := time.Now
	g.now.Store(&now)
	if err := g.table.Load(g.path, now()); err != nil {
		s.log.Warn("greylist: saved table not loaded; starting empty", "err", err)
	}
	g.apply(s.cfg.Greylist)
	return g
}

// apply takes a (reloaded) [greylist] section.
func (g *greyGate) apply(c config.GreylistConfig) {
	g.table.SetConfig(c.Table())
	g.enabled.Store(c.Enabled)
}

func (g *greyGate) Check(addr netip.Addr, from, rcpt string, now time.Time) greylist.Verdict {
	if !g.enabled.Load() {
		return greylist.Verdict{Pass: true, Why: "off"}
	}
	return g.table.Check(addr, from, rcpt, now)
}

// clock is the router's clock (tests set now).
func (g *greyGate) clock() time.Time { return (*g.now.Load())() }

// save writes the table if it changed.
func (g *greyGate) save() error { return g.table.Save(g.path, g.clock()) }

// keepSaving saves the table every greylistSaveEvery until ctx ends, then
// once more.
func (s *Server) keepSaving(ctx context.Context, g *greyGate) {
	t := time.NewTicker(greylistSaveEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			if err := g.save(); err != nil {
				s.log.Error("greylist: table not saved", "err", err)
			}
			return
		}
		if err := g.save(); err != nil {
			s.log.Error("greylist: table not saved", "err", err)
		}
	}
}
