package server

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"sync/atomic"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/connsrv"
	"github.com/agua-mail/agua/internal/dnsbl"
	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/internal/smtpd"
	"github.com/agua-mail/agua/shield"
)

// dnsblState is the [dnsbl] section in force and its checker (nil when no
// list is configured). A reload swaps the whole state: sessions and the
// shield read one consistent snapshot.
type dnsblState struct {
	cfg config.DNSBLConfig
	c   *dnsbl.Checker
}

// dnsblLive holds the current dnsblState.
type dnsblLive struct{ p atomic.Pointer[dnsblState] }

func (l *dnsblLive) load() *dnsblState {
	if st := l.p.Load(); st != nil {
		return st
	}
	return &dnsblState{}
}

// checker returns the current checker, nil when no list is configured.
func (s *Server) dnsblChecker() *dnsbl.Checker { return s.dnsbl.load().c }

// newDNSBL prepares the state of a [dnsbl] section; the lookups go
// through the accept path's guarded resolver.
func (s *Server) newDNSBL(d config.DNSBLConfig) (*dnsblState, error) {
	st := &dnsblState{cfg: d}
	sites, err := d.Sites()
	if err != nil || len(sites) == 0 {
		return st, err
	}
	st.c = dnsbl.New(dnsbl.Config{Sites: sites, Threshold: d.Threshold, AllowThreshold: d.AllowlistThreshold,
		Timeout: d.Timeout, CacheTTL: d.CacheTTL, CacheSize: d.CacheSize}, s.acceptDNS.A)
	return st, nil
}

// reloadDNSBL applies a reloaded [dnsbl] section when it changed. A new
// checker starts with an empty score cache, but the resolver's cache
// still holds the lists' answers for their TTL.
func (s *Server) reloadDNSBL(d config.DNSBLConfig) error {
	if reflect.DeepEqual(s.dnsbl.load().cfg, d) {
		return nil
	}
	st, err := s.newDNSBL(d)
	if err != nil {
		return err
	}
	s.dnsbl.p.Store(st)
	s.log.Info("dnsbl: reloaded", "lists", len(d.Lists), "threshold", d.Threshold, "action", d.Action)
	return nil
}

// dnsblWhy is the admin API's view of an address's score; nil without
// lists.
func (s *Server) dnsblWhy(ctx context.Context, addr netip.Addr) *dnsbl.Result {
	c := s.dnsblChecker()
	if c == nil {
		return nil
	}
	r := c.Check(ctx, addr)
	return &r
}

// dnsblScreen is the smtpd Screen hook: the lookups start as the session
// starts (cached answers make them free) and the greeting waits for them
// at most banner_budget, overlapping the banner delay. Allowlisted and
// trusted clients are not looked up.
func (s *Server) dnsblScreen(conn net.Conn) func(context.Context) smtpd.Screening {
	st := s.dnsbl.load()
	c, d := st.c, st.cfg
	addr := connsrv.IP(conn.RemoteAddr())
	if c == nil || !addr.IsValid() || shield.Allowlisted(conn) {
		return nil
	}
	c.Start(addr)
	return func(ctx context.Context) smtpd.Screening {
		ctx, cancel := context.WithTimeout(ctx, d.BannerBudget)
		defer cancel()
		r := c.Check(ctx, addr)
		if !r.Done {
			s.log.Debug("dnsbl: lookups not done within banner_budget; served as not listed", "addr", addr)
			return smtpd.Screening{}
		}
		if r.Allowlisted {
			shield.Report(conn, mailevents.DNSAllowlisted)
			return smtpd.Screening{}
		}
		if !r.Listed {
			return smtpd.Screening{}
		}
		reason := r.Reason()
		s.log.Info("dnsbl: client listed", "addr", addr, "score", r.Score, "reason", reason, "action", d.Action)
		switch d.Action {
		case "refuse":
			// RFC 5321 3.1: a server may refuse service with 554 in
			// place of the greeting; RFC 7372 4.3 code 5.7.1 (delivery
			// not authorized). The reason for logs and why is
			// dnsbl:<list>.
			return smtpd.Screening{Refuse: smtpd.Errorf(554, "5.7.1", "Service refused: %s is listed by %s", addr, r.ListedBy())}
		case "tarpit":
			// The shield serves it as untrusted (dnsblReputation) from
			// its next connection; this one is slowed down.
			return smtpd.Screening{Greeting: d.TarpitGreeting, Reply: d.TarpitReply}
		}
		return smtpd.Screening{}
	}
}

// dnsblReputation gives the shield the cached [dnsbl] scores, so that a
// client already known to be listed is refused at accept on MX listeners,
// without a session (action refuse), or admitted as an untrusted stranger
// (tarpit, untrusted). Uncached addresses are left to the session's
// Screen.
type dnsblReputation struct{ live *dnsblLive }

func (d dnsblReputation) Peek(addr netip.Addr, listener string) (shield.Verdict, bool) {
	st := d.live.load()
	if st.c == nil || listener != smtpd.ModeMX.String() {
		return shield.Verdict{}, false
	}
	r := st.c.Peek(addr)
	if !r.Done || !r.Listed || r.Allowlisted {
		return shield.Verdict{}, false
	}
	switch st.cfg.Action {
	case "refuse":
		return shield.Verdict{Refuse: true, Reason: "Service refused: listed by " + r.ListedBy(), Source: r.Reason()}, true
	case "tarpit", "untrusted":
		return shield.Verdict{Untrusted: true, Source: r.Reason()}, true
	}
	return shield.Verdict{}, false
}
