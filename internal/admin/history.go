package admin

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// maxHistorySince bounds how far back GET /v1/history looks.
const maxHistorySince = 90 * 24 * time.Hour

// ParseSince reads a period as a duration back from now ("24h", "90m") or
// as an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-min(d, maxHistorySince)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// history serves GET /v1/history?since=24h&step=1m[&offending=true][&cluster=true]:
// the shield's event history (per address, a timeline, bans and unbans)
// for reports; with offending=true only the addresses that misbehaved,
// which keeps the answer small on a busy server; with cluster=true the
// bans and unbans every node sharing the state made too (the store's ban
// log), not only this node's.
func (a *Server) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := time.Now()
	since := now.Add(-24 * time.Hour)
	if v := q.Get("since"); v != "" {
		var err error
		if since, err = ParseSince(v, now); err != nil {
			fail(w, http.StatusBadRequest, "since=%q: use a duration (24h) or an RFC 3339 time", v)
			return
		}
	}
	step := time.Minute
	if v := q.Get("step"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			fail(w, http.StatusBadRequest, "step=%q: use a duration of at least 1m", v)
			return
		}
		step = d
	}
	snap := a.Shield.HistorySnapshot(since, step)
	if q.Get("cluster") == "true" {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		err := a.Shield.MergeClusterBans(ctx, &snap)
		cancel()
		if err != nil {
			fail(w, http.StatusServiceUnavailable, "the cluster's ban log could not be read: %v", err)
			return
		}
	}
	if q.Get("offending") == "true" {
		kept := snap.Addrs[:0]
		for _, ah := range snap.Addrs {
			if ah.Offending() {
				kept = append(kept, ah)
			}
		}
		snap.Addrs = kept
	}
	writeJSON(w, http.StatusOK, snap)
}
