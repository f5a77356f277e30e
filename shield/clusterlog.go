package shield

import (
	"context"
	"net/netip"
	"sort"
	"time"
)

// MergeClusterBans adds to snap the bans and unbans the other nodes
// sharing this Shield's store made in snap's period (StateStore.BanLog),
// so a report covers the cluster's history: each goes to its address's
// AddrHistory (made if this node never saw the address), to snap.Bans and
// to the timeline's counts. This node's own entries are in snap already
// and are skipped. The log is bounded by the store; the addresses' events
// and refusals stay this node's.
func (s *Shield) MergeClusterBans(ctx context.Context, snap *HistorySnapshot) error {
	log, err := s.store.BanLog(ctx, snap.Since)
	if err != nil {
		return err
	}
	type key struct {
		kind string
		p    netip.Prefix
		ms   int64
	}
	seen := make(map[key]bool, len(snap.Bans))
	for i, e := range snap.Bans {
		seen[key{e.Kind, e.Prefix, e.Time.UnixMilli()}] = true
		if e.Node == "" {
			snap.Bans[i].Node = s.node
		}
	}
	byAddr := make(map[netip.Prefix]int, len(snap.Addrs))
	for i, a := range snap.Addrs {
		byAddr[a.Addr] = i
	}
	for _, e := range log {
		k := key{e.Kind, e.Prefix, e.Time.UnixMilli()}
		if seen[k] || (s.node != "" && e.Node == s.node) || e.Time.After(snap.Now) {
			continue
		}
		seen[k] = true
		snap.Bans = append(snap.Bans, e)
		i, ok := byAddr[e.Prefix]
		if !ok {
			i = len(snap.Addrs)
			byAddr[e.Prefix] = i
			snap.Addrs = append(snap.Addrs, AddrHistory{Addr: e.Prefix, First: e.Time, Last: e.Time})
		}
		a := &snap.Addrs[i]
		a.Bans = append(a.Bans, e)
		if e.Time.Before(a.First) {
			a.First = e.Time
		}
		if e.Time.After(a.Last) {
			a.Last = e.Time
		}
		if p := timelinePoint(snap, e.Time); p != nil {
			if e.Kind == "unban" {
				p.Unbans++
			} else {
				p.Bans++
			}
		}
	}
	sort.SliceStable(snap.Bans, func(i, j int) bool { return snap.Bans[i].Time.Before(snap.Bans[j].Time) })
	sort.SliceStable(snap.Addrs, func(i, j int) bool { return prefixLess(snap.Addrs[i].Addr, snap.Addrs[j].Addr) })
	for i := range snap.Addrs {
		b := snap.Addrs[i].Bans
		sort.SliceStable(b, func(x, y int) bool { return b[x].Time.Before(b[y].Time) })
	}
	return nil
}

// timelinePoint returns the step of snap's timeline holding t, or nil.
func timelinePoint(snap *HistorySnapshot, t time.Time) *TimelinePoint {
	for i := range snap.Timeline {
		p := &snap.Timeline[i]
		if !t.Before(p.Start) && t.Before(p.Start.Add(snap.Step)) {
			return p
		}
	}
	return nil
}
