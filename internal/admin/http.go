package admin

import (
	"crypto/subtle"
	"embed"
	"io/fs"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/agua-mail/agua/shield"
)

//go:embed web
var webFS embed.FS

// HTTPHandler is the admin API for the TCP listener: the same routes as
// the unix socket, plus /metrics and /v1/live, all behind the bearer
// token, and the dashboard's static files (public: they hold no data).
// The shield's middleware guards everything, and a wrong token counts as an
// authentication failure of the client's address.
func (a *Server) HTTPHandler(token string, metrics http.Handler) http.Handler {
	api := http.NewServeMux()
	api.Handle("/v1/", a.Handler())
	if metrics != nil {
		api.Handle("GET /metrics", metrics)
	}
	authed := a.requireToken(token, api)

	root := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	root.Handle("/", http.FileServerFS(static))
	root.Handle("/v1/", authed)
	root.Handle("/metrics", authed)
	return securityHeaders(root)
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'")
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (a *Server) requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			if c := shield.ConnFromRequest(r); c != nil && len(got) > 0 {
				if d := c.ReportAuth("admin", false); d.Action != shield.Allow {
					w.Header().Set("Connection", "close")
				}
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="agua admin"`)
			fail(w, http.StatusUnauthorized, "missing or wrong bearer token (see admin.token or <data_dir>/admin.token)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Live is what the dashboard and `agua top` poll once a second.
type Live struct {
	Time      time.Time                       `json:"time"`
	Status    any                             `json:"status"`
	Listeners map[string]shield.ListenerStats `json:"listeners"`
	Bans      []shield.BanInfo                `json:"bans"`
	TopAddrs  []Talker                        `json:"top_addresses"`
	TopNets   []Talker                        `json:"top_networks"`
	Lockdown  bool                            `json:"lockdown"`
	Conns     int                             `json:"connections"`
	// WorstAddrs and WorstNets are the lowest reputation scores (below
	// zero), with their parts.
	WorstAddrs []shield.Score `json:"worst_addresses"`
	WorstNets  []shield.Score `json:"worst_networks"`
}

// Talker is one address or network with its open connections.
type Talker struct {
	Prefix        string `json:"prefix"`
	Conns         int    `json:"connections"`
	Authenticated int    `json:"authenticated"`
	Banned        bool   `json:"banned"`
	// Exempt says why the shield would refuse to block it ("prefix is
	// allowlisted"), so the dashboard offers no Block button; "" if none.
	Exempt string `json:"exempt,omitempty"`
}

const topN = 15

// LiveSnapshot gathers the live view.
func (a *Server) LiveSnapshot() Live {
	st := a.Shield.Stats()
	l := Live{Time: time.Now(), Listeners: st.Listeners, Bans: a.Shield.Bans(), Lockdown: st.Lockdown}
	if a.Status != nil {
		l.Status = a.Status()
	}
	conns := a.Shield.Conns()
	l.Conns = len(conns)
	byAddr := map[netip.Prefix]*Talker{}
	byNet := map[netip.Prefix]*Talker{}
	for _, c := range conns {
		host := netip.PrefixFrom(c.Addr, c.Addr.BitLen())
		bits := 24
		if c.Addr.Is6() {
			bits = 64
		}
		nw, _ := c.Addr.Prefix(bits)
		for _, m := range []struct {
			m map[netip.Prefix]*Talker
			p netip.Prefix
		}{{byAddr, host}, {byNet, nw}} {
			t := m.m[m.p]
			if t == nil {
				t = &Talker{Prefix: m.p.String()}
				m.m[m.p] = t
			}
			t.Conns++
			if c.Authenticated {
				t.Authenticated++
			}
		}
	}
	banned := map[string]bool{}
	for _, b := range l.Bans {
		banned[b.Prefix.String()] = true
	}
	l.TopAddrs = a.top(byAddr, banned)
	l.TopNets = a.top(byNet, banned)
	if l.Bans == nil {
		l.Bans = []shield.BanInfo{}
	}
	l.WorstAddrs, l.WorstNets = a.Shield.WorstScores(topN)
	return l
}

func (a *Server) top(m map[netip.Prefix]*Talker, banned map[string]bool) []Talker {
	out := make([]Talker, 0, len(m))
	for _, t := range m {
		t.Banned = banned[t.Prefix]
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Conns != out[j].Conns {
			return out[i].Conns > out[j].Conns
		}
		return strings.Compare(out[i].Prefix, out[j].Prefix) < 0
	})
	if len(out) > topN {
		out = out[:topN]
	}
	for i := range out {
		if p, err := netip.ParsePrefix(out[i].Prefix); err == nil {
			if err := a.Shield.CanBan(p); err != nil {
				out[i].Exempt = err.Error()
			}
		}
	}
	return out
}

func (a *Server) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.LiveSnapshot())
}
