package shield

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
)

type connCtxKey struct{}

// ConnContext is an http.Server.ConnContext that lets Middleware find the
// *Conn of a request (for its real address and for Report):
//
//	srv := &http.Server{Handler: s.Middleware("admin", mux), ConnContext: shield.ConnContext}
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if sc := FromConn(c); sc != nil {
		return context.WithValue(ctx, connCtxKey{}, sc)
	}
	return ctx
}

// ConnFromRequest returns the shield connection that carried r, when the
// server uses ConnContext; nil otherwise.
func ConnFromRequest(r *http.Request) *Conn {
	c, _ := r.Context().Value(connCtxKey{}).(*Conn)
	return c
}

// Middleware guards an HTTP handler: rules, bans and lockdown, plus a
// per-address request rate (Limits.RequestRate). A policy refusal answers
// 403, a rate or capacity refusal 429 with Retry-After, and drop or tarpit
// closes the connection without an answer. The client address is the
// *Conn's when the server's listener is a shield listener (which also makes
// r.RemoteAddr the real client after the PROXY protocol), else r.RemoteAddr.
// Requests without an IP address (e.g. over a unix socket) pass untouched.
func (s *Shield) Middleware(name string, next http.Handler) http.Handler {
	st := s.statsFor(name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var addr netip.Addr
		if c := ConnFromRequest(r); c != nil {
			addr = c.addr
		} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = unmap(ap.Addr())
		}
		if !addr.IsValid() {
			next.ServeHTTP(w, r)
			return
		}
		now := s.now()
		d, exempt := s.judge(addr, now, true)
		retry := 0
		if d.Action == Allow && !exempt {
			ns := now.UnixNano()
			lim := &s.cfg().Limits
			var tokens float64
			limited := false
			s.ips.do(addr, true, func(v *ipState, _ bool) {
				limited = !v.reqs.take(ns, lim.RequestRate, lim.RequestBurst)
				tokens = v.reqs.tokens
			})
			if limited {
				d = s.enforce(addr, Decision{Action: Reject, Temporary: true, Reason: reasonRequestRate, Source: "limit:request_rate"}, true)
				retry = int(math.Ceil((1 - tokens) / lim.RequestRate))
			}
		}
		if d.Action == Allow {
			st.accepted.Add(1)
			next.ServeHTTP(w, r)
			return
		}
		s.agg.add(hostPrefix(addr), d.Source, d.Action, false)
		switch {
		case d.Action == Drop || d.Action == Tarpit:
			st.dropped.Add(1)
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					if tc, ok := underlying(c).(*net.TCPConn); ok {
						tc.SetLinger(0)
					}
					c.Close() // through the wrappers, so a *Conn releases its slots
					return
				}
			}
			panic(http.ErrAbortHandler) // HTTP/2: abort the stream
		case d.Temporary:
			st.rejected.Add(1)
			w.Header().Set("Retry-After", strconv.Itoa(max(retry, 1)))
			http.Error(w, d.Reason, http.StatusTooManyRequests)
		default:
			st.rejected.Add(1)
			http.Error(w, d.Reason, http.StatusForbidden)
		}
	})
}

// underlying returns the innermost net.Conn below wrappers.
func underlying(c net.Conn) net.Conn {
	for range 8 {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
	return c
}
