// Package admin is agua's admin API: JSON over HTTP, served on a unix socket
// in the data folder. The CLI verbs (agua block, unblock, bans, why, reload,
// lockdown, status) are clients of this API, so there is one implementation
// of each operation.
package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/dnsbl"
	"github.com/agua-mail/agua/shield"
)

// Server holds what the API operates on.
type Server struct {
	Shield *shield.Shield
	Status func() any // server-wide status (version, uptime, listeners, sessions)
	Log    *slog.Logger
	// Queue serves /v1/queue and below (queuehttp.Handler); nil: no queue.
	Queue http.Handler
	// Suspensions serves /v1/suspensions and below: the accounts whose
	// sending is suspended (suspend, unsuspend); nil: none.
	Suspensions http.Handler
	// Reload, if set, runs on POST /v1/reload after the shield's rules
	// (the DKIM keys); its error is reported after the rules reloaded.
	Reload func() error
	// ReloadShield, if set, replaces Shield.Reload on POST /v1/reload:
	// the server re-reads its config file and applies the whole [shield]
	// section (Shield.Reconfigure). Its error lists every problem, one
	// per line, and means nothing changed.
	ReloadShield func() error
	// RestartPending, if set, names the config sections that differ from
	// the running ones but apply only at the next restart (the reload
	// result lists them, so that the operator is told, not only the log).
	RestartPending func() []string
	// WidestBlock4 and WidestBlock6 are the widest prefixes (fewest bits)
	// a block accepts without Force; 0 means DefaultWidestBlock4/6.
	WidestBlock4, WidestBlock6 int
	// DNSBL, if set, scores an address against the [dnsbl] lists for
	// GET /v1/why, waiting for the lookups until ctx ends; nil when no
	// list is configured (now: the lists change on reload).
	DNSBL func(ctx context.Context, addr netip.Addr) *dnsbl.Result
}

// The widest blocks accepted without force by default: a /8 of IPv4 (16
// million addresses, a large ISP's whole range) and a /32 of IPv6 (an ISP's
// allocation). Anything wider is almost always a typo such as 0.0.0.0/0.
const (
	DefaultWidestBlock4 = 8
	DefaultWidestBlock6 = 32
)

// BanRequest is the body of POST /v1/bans.
type BanRequest struct {
	Prefix string `json:"prefix"` // an address or CIDR
	For    string `json:"for"`    // duration, e.g. "1h"; "" = 24h
	Reason string `json:"reason"`
	Action string `json:"action"` // reject, drop or tarpit; "" = reject
	Force  bool   `json:"force"`  // accept a prefix wider than the widest-block bound
}

// LockdownRequest is the body of POST /v1/lockdown.
type LockdownRequest struct {
	On bool `json:"on"`
}

// Handler returns the API routes.
func (a *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("POST /v1/reload", a.reload)
	mux.HandleFunc("GET /v1/bans", a.bans)
	mux.HandleFunc("POST /v1/bans", a.ban)
	mux.HandleFunc("DELETE /v1/bans", a.unban)
	mux.HandleFunc("GET /v1/why", a.why)
	mux.HandleFunc("GET /v1/lockdown", a.lockdownGet)
	mux.HandleFunc("POST /v1/lockdown", a.lockdownSet)
	mux.HandleFunc("GET /v1/conns", a.conns)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "no such API route: %s %s", r.Method, r.URL.Path)
	})
	mux.HandleFunc("GET /v1/live", a.live)
	mux.HandleFunc("GET /v1/history", a.history)
	if a.Queue != nil {
		mux.Handle("/v1/queue", a.Queue)
		mux.Handle("/v1/queue/", a.Queue)
	}
	if a.Suspensions != nil {
		mux.Handle("/v1/suspensions", a.Suspensions)
		mux.Handle("/v1/suspensions/", a.Suspensions)
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// apiError is the body of every failed request.
type apiError struct {
	Error string `json:"error"`
}

func fail(w http.ResponseWriter, code int, format string, a ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, a...)})
}

func (a *Server) status(w http.ResponseWriter, r *http.Request) {
	var st any
	if a.Status != nil {
		st = a.Status()
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *Server) reload(w http.ResponseWriter, r *http.Request) {
	reload := a.Shield.Reload
	if a.ReloadShield != nil {
		reload = a.ReloadShield
	}
	if err := reload(); err != nil {
		fail(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	if a.Reload != nil {
		if err := a.Reload(); err != nil {
			fail(w, http.StatusUnprocessableEntity, "rules reloaded; %v", err)
			return
		}
	}
	files := a.Shield.RuleFiles()
	res := ReloadResult{Result: "rules reloaded:" + describeRuleFiles(files), Files: files}
	if a.RestartPending != nil {
		res.RestartPending = a.RestartPending()
	}
	writeJSON(w, http.StatusOK, res)
}

// ReloadResult is the answer to POST /v1/reload: what each rule file gave,
// and the changed config sections that wait for a restart.
type ReloadResult struct {
	Result         string            `json:"result"`
	Files          []shield.RuleFile `json:"files"`
	RestartPending []string          `json:"restart_pending,omitempty"`
}

func describeRuleFiles(files []shield.RuleFile) string {
	if len(files) == 0 {
		return " no rule files configured"
	}
	var b strings.Builder
	for _, f := range files {
		if f.Missing {
			fmt.Fprintf(&b, "\n  %s: MISSING, none of its rules are in force", f.Name)
			continue
		}
		fmt.Fprintf(&b, "\n  %s: %d line(s), %d rule(s)", f.Name, f.Lines, f.Rules)
	}
	return b.String()
}

func (a *Server) bans(w http.ResponseWriter, r *http.Request) {
	bans := a.Shield.Bans()
	if bans == nil {
		bans = []shield.BanInfo{} // [], not null, as the other lists: scripts iterate over it
	}
	writeJSON(w, http.StatusOK, bans)
}

// ParsePrefix accepts "192.0.2.7", "192.0.2.0/24", "2001:db8::/32".
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

func (a *Server) ban(w http.ResponseWriter, r *http.Request) {
	var req BanRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "bad request body: %v", err)
		return
	}
	p, err := ParsePrefix(req.Prefix)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err := a.checkWidth(p); err != nil && !req.Force {
		fail(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	ttl := 24 * time.Hour
	if req.For != "" {
		if ttl, err = time.ParseDuration(req.For); err != nil || ttl <= 0 {
			fail(w, http.StatusBadRequest, "bad duration %q (use e.g. 30m, 12h)", req.For)
			return
		}
	}
	act := shield.Reject
	if req.Action != "" {
		if act, err = shield.ParseAction(req.Action); err != nil || act == shield.Allow {
			fail(w, http.StatusBadRequest, "a ban's action is reject, drop or tarpit, not %q (to always serve an address, add an allow rule to shield.rules)", req.Action)
			return
		}
	}
	reason := req.Reason
	if reason == "" {
		reason = "manual"
	}
	if err := a.Shield.CanBan(p); err != nil {
		// "prefix is allowlisted" alone left the operator to find which
		// address and why; agua why names the rule.
		fail(w, http.StatusConflict, "cannot block %s: %v: it is never refused, limited or banned (`agua why %s` names the rule)", p, err, p.Addr())
		return
	}
	if err := a.Shield.Ban(p, ttl, reason, act); err != nil {
		fail(w, http.StatusConflict, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": fmt.Sprintf("%s blocked for %s (%s, %s)", p, ttl, reason, act)})
}

// checkWidth refuses a block wider than the bound, saying what it covers.
func (a *Server) checkWidth(p netip.Prefix) error {
	widest, family := cmp.Or(a.WidestBlock4, DefaultWidestBlock4), "IPv4"
	if p.Addr().Is6() {
		widest, family = cmp.Or(a.WidestBlock6, DefaultWidestBlock6), "IPv6"
	}
	if p.Bits() >= widest {
		return nil
	}
	covers := fmt.Sprintf("2^%d addresses, %s to %s", p.Addr().BitLen()-p.Bits(), p.Masked().Addr(), shield.LastAddr(p))
	if p.Bits() == 0 {
		covers = "every " + family + " address: the whole Internet"
	}
	return fmt.Errorf("%s would block %s; blocks wider than /%d need force (agua block -force)", p, covers, widest)
}

func (a *Server) unban(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case q.Get("all") == "true":
		n := a.Shield.UnbanAll()
		writeJSON(w, http.StatusOK, map[string]any{"result": fmt.Sprintf("%d ban(s) lifted", n), "lifted": n})
	case q.Get("reason") != "":
		n := a.Shield.UnbanReason(q.Get("reason"))
		writeJSON(w, http.StatusOK, map[string]any{"result": fmt.Sprintf("%d ban(s) lifted", n), "lifted": n})
	case q.Get("prefix") != "":
		p, err := ParsePrefix(q.Get("prefix"))
		if err != nil {
			fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		if !a.Shield.Unban(p) {
			fail(w, http.StatusNotFound, "%s is not banned (see `agua bans`; rules in shield.rules are lifted by editing the file)", p)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"result": fmt.Sprintf("%s unblocked", p), "lifted": 1})
	default:
		fail(w, http.StatusBadRequest, "say which bans to lift: prefix=, reason= or all=true")
	}
}

func (a *Server) why(w http.ResponseWriter, r *http.Request) {
	ip, err := netip.ParseAddr(strings.TrimSpace(r.URL.Query().Get("ip")))
	if err != nil {
		fail(w, http.StatusBadRequest, "%q is not an IP address", r.URL.Query().Get("ip"))
		return
	}
	x := a.Shield.Why(ip.Unmap())
	res := WhyResult{Explanation: x, Limits: configView(reflect.ValueOf(x.Limits))}
	for ev, th := range x.Counters.Thresholds {
		if res.Thresholds == nil {
			res.Thresholds = map[string]WhyThreshold{}
		}
		res.Thresholds[ev] = WhyThreshold{Count: th.Count, Window: th.Window.String(), DryRun: th.DryRun}
	}
	if a.DNSBL != nil {
		res.DNSBL = a.DNSBL(r.Context(), ip.Unmap())
	}
	writeJSON(w, http.StatusOK, res)
}

// WhyResult is the answer to GET /v1/why: the shield's explanation, with
// the limits under their config names ([shield.limits]) and durations
// written as in the config ("5s"), not as Go field names and nanoseconds.
type WhyResult struct {
	shield.Explanation
	Limits map[string]any `json:"limits"`
	// Thresholds are the [shield.thresholds] of the events counted
	// against the address (counters.events): how near it is to a ban.
	Thresholds map[string]WhyThreshold `json:"thresholds,omitempty"`
	DNSBL      *dnsbl.Result           `json:"dnsbl,omitempty"` // each list's answer and the score; nil without [dnsbl] lists
}

// WhyThreshold is a behaviour threshold as the config writes it.
type WhyThreshold struct {
	Count  int    `json:"count"`
	Window string `json:"window"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// configView renders a config struct as its TOML keys and values, with
// durations as text.
func configView(v reflect.Value) map[string]any {
	out := map[string]any{}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		switch fv := v.Field(i); {
		case fv.Type() == reflect.TypeFor[time.Duration]():
			out[key] = time.Duration(fv.Int()).String()
		case fv.Kind() == reflect.Struct:
			out[key] = configView(fv)
		default:
			out[key] = fv.Interface()
		}
	}
	return out
}

func (a *Server) lockdownGet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, LockdownRequest{On: a.Shield.Lockdown()})
}

func (a *Server) lockdownSet(w http.ResponseWriter, r *http.Request) {
	var req LockdownRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<12)).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "bad request body: %v", err)
		return
	}
	a.Shield.SetLockdown(req.On)
	writeJSON(w, http.StatusOK, req)
}

func (a *Server) conns(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.Shield.Conns())
}

// ErrNotRunning is returned by the client when no server answers.
var ErrNotRunning = errors.New("agua is not running")
