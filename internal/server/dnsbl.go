package server

import (
	"context"
	"net"
	"net/netip"

	"github.com/agua-mail/agua/internal/dnsbl"
	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/internal/smtpd"
	"github.com/agua-mail/agua/shield"
)

// openDNSBL prepares the [dnsbl] lists; nil when none is configured.
func (s *Server) openDNSBL() (*dnsbl.Checker, error) {
	d := s.cfg.DNSBL
	sites, err := d.Sites()
	if err != nil || len(sites) == 0 {
		return nil, err
	}
	return dnsbl.New(dnsbl.Config{Sites: sites, Threshold: d.Threshold, AllowThreshold: d.AllowlistThreshold,
		Timeout: d.Timeout, CacheTTL: d.CacheTTL, CacheSize: d.CacheSize}, s.out.res.A), nil
}

// dnsblScreen is the smtpd Screen hook: the lookups start as the session
// starts (cached answers make them free) and the greeting waits for them
// at most banner_budget, overlapping the banner delay. Allowlisted and
// trusted clients are not looked up.
func (s *Server) dnsblScreen(c *dnsbl.Checker) func(net.Conn) func(context.Context) *smtpd.Error {
	d := s.cfg.DNSBL
	return func(conn net.Conn) func(context.Context) *smtpd.Error {
		addr := remoteAddr(conn)
		if !addr.IsValid() || shield.Allowlisted(conn) {
			return nil
		}
		c.Start(addr)
		return func(ctx context.Context) *smtpd.Error {
			ctx, cancel := context.WithTimeout(ctx, d.BannerBudget)
			defer cancel()
			r := c.Check(ctx, addr)
			if !r.Done {
				s.log.Debug("dnsbl: lookups not done within banner_budget; served as not listed", "addr", addr)
				return nil
			}
			if r.Allowlisted {
				shield.Report(conn, mailevents.DNSAllowlisted)
				return nil
			}
			if !r.Listed {
				return nil
			}
			reason := r.Reason()
			s.log.Info("dnsbl: client listed", "addr", addr, "score", r.Score, "reason", reason, "action", d.Action)
			if d.Action != "refuse" {
				return nil
			}
			// RFC 5321 3.1: a server may refuse service with 554 in place
			// of the greeting; RFC 7372 4.3 code 5.7.1 (delivery not
			// authorized). The reason for logs and why is dnsbl:<list>.
			return smtpd.Errorf(554, "5.7.1", "Service refused: %s is listed by %s", addr, r.ListedBy())
		}
	}
}

func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// dnsblReputation gives the shield the cached [dnsbl] scores, so that a
// client already known to be listed is refused at accept on MX listeners,
// without a session. Uncached addresses are left to the session's Screen.
type dnsblReputation struct {
	c      *dnsbl.Checker
	refuse bool // action = refuse
}

func (d dnsblReputation) Peek(addr netip.Addr, listener string) (shield.Verdict, bool) {
	if listener != smtpd.ModeMX.String() || !d.refuse {
		return shield.Verdict{}, false
	}
	r := d.c.Peek(addr)
	if !r.Done || !r.Listed || r.Allowlisted {
		return shield.Verdict{}, false
	}
	return shield.Verdict{Refuse: true, Reason: "Service refused: listed by " + r.ListedBy(), Source: r.Reason()}, true
}
