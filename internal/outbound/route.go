package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/agua-mail/agua/internal/resolver"
)

// Limits on how far one connection attempt goes down the MX list.
const (
	maxHosts = 10 // MX hosts tried
	maxAddrs = 12 // addresses tried in all
)

// routeError is a failure to reach a destination at all; Permanent ones
// (no such domain, null MX) bounce at once, the others defer.
type routeError struct {
	Permanent bool
	Code      int    // SMTP-like code for the DSN: 550, 451, ...
	Enhanced  string // RFC 3463 code
	Text      string
	rateLimit bool // the last host answered 421: slow down
}

func (e *routeError) Error() string { return fmt.Sprintf("%d %s %s", e.Code, e.Enhanced, e.Text) }

// host is one place to connect to.
type host struct {
	name   string
	port   int
	secure bool    // found through a DNSSEC-validated MX answer (DANE may apply)
	sts    stsMode // what the domain's MTA-STS policy asks of the connection
}

// hosts returns the hosts to try for domain, best first (RFC 5321 5.1):
// MX records by preference, equal ones shuffled; no MX records means the
// domain itself (the implicit MX); a null MX (RFC 7505) is a permanent
// failure.
func (e *Engine) hosts(ctx context.Context, domain string) ([]host, *routeError) {
	if e.relay.name != "" {
		return []host{e.relay}, nil
	}
	mxs, mxInfo, err := e.res.MX(ctx, domain)
	switch {
	case errors.Is(err, resolver.ErrNotFound):
		return nil, &routeError{Permanent: true, Code: 550, Enhanced: "5.1.2", Text: "domain " + domain + " does not exist (NXDOMAIN)"}
	case errors.Is(err, resolver.ErrPermanent):
		return nil, &routeError{Permanent: true, Code: 550, Enhanced: "5.1.2", Text: "bad destination domain " + domain}
	case err != nil:
		return nil, &routeError{Code: 451, Enhanced: "4.4.3", Text: "MX lookup for " + domain + " failed: " + err.Error()}
	}
	if len(mxs) == 0 {
		// RFC 5321 5.1: no MX, the domain is its own mail exchanger.
		return []host{{name: domain, port: e.port}}, nil
	}
	// RFC 7505 3: a null MX is the only MX of a domain that takes no mail.
	real := slices.DeleteFunc(slices.Clone(mxs), func(m resolver.MX) bool { return m.Host == "" })
	if len(real) == 0 {
		return nil, &routeError{Permanent: true, Code: 556, Enhanced: "5.1.10", Text: "domain " + domain + " accepts no mail (null MX, RFC 7505)"}
	}
	rand.Shuffle(len(real), func(i, j int) { real[i], real[j] = real[j], real[i] })
	slices.SortStableFunc(real, func(a, b resolver.MX) int { return int(a.Pref) - int(b.Pref) })
	// RFC 5321 5.1: when this server is one of the MX hosts, only the
	// better ones may be used; none left means the mail would loop.
	for _, m := range real {
		if strings.EqualFold(strings.TrimSuffix(m.Host, "."), e.hostname) {
			real = slices.DeleteFunc(real, func(x resolver.MX) bool { return x.Pref >= m.Pref })
			if len(real) == 0 {
				return nil, &routeError{Permanent: true, Code: 554, Enhanced: "5.4.6", Text: "mail for " + domain + " loops back to myself (" + m.Host + " is this server)"}
			}
			break
		}
	}
	out := make([]host, 0, len(real))
	for _, m := range real {
		out = append(out, host{name: m.Host, port: e.port, secure: mxInfo.Authentic})
	}
	return out, nil
}

// connect returns a session with a host of domain, ready for MAIL: greeted,
// EHLO'd, with TLS when the peer offers it (opportunistic, RFC 3207 and
// RFC 7435) or as the relay host requires, authenticated to the relay.
func (e *Engine) connect(ctx context.Context, domain string) (*session, *routeError) {
	hosts, rerr := e.hosts(ctx, domain)
	if rerr == nil {
		hosts, rerr = e.applySTS(ctx, domain, hosts)
	}
	if rerr != nil {
		return nil, rerr
	}
	var last error
	rateLimited := false
	tried := 0
	implicit := e.relay.name == "" && len(hosts) == 1 && hosts[0].name == domain
	for i, h := range hosts {
		if i >= maxHosts || tried >= maxAddrs {
			break
		}
		addrs, secureAddrs, err := e.addrs(ctx, h.name)
		if err != nil {
			last = err
			continue
		}
		var tlsa []resolver.TLSA
		if h.secure && secureAddrs && e.dane {
			if tlsa, err = e.daneRecords(ctx, h); err != nil {
				// RFC 7672 2.2: a host whose TLSA records cannot be
				// looked up is skipped; mail waits rather than go in
				// the clear.
				last = err
				continue
			}
		}
		if len(addrs) == 0 {
			last = fmt.Errorf("%s has no address records", h.name)
			if implicit {
				// RFC 5321 5.1: no MX and no address: undeliverable.
				return nil, &routeError{Permanent: true, Code: 550, Enhanced: "5.1.2", Text: "domain " + domain + " has no MX and no address records"}
			}
			continue
		}
		for _, a := range addrs {
			if tried >= maxAddrs {
				break
			}
			tried++
			s, err := e.session(ctx, netip.AddrPortFrom(a, uint16(h.port)), h, tlsa)
			if err == nil {
				return s, nil
			}
			if ctx.Err() != nil {
				return nil, &routeError{Code: 451, Enhanced: "4.4.2", Text: "shutting down"}
			}
			e.log.Debug("outbound: connection failed", "domain", domain, "host", h.name, "addr", a, "err", err)
			last = err
			var re *ReplyError
			if errors.As(err, &re) && (re.Reply.Code == 421 || re.Reply.Code == 451) {
				rateLimited = true
			}
		}
	}
	if last == nil {
		last = errors.New("no host to connect to")
	}
	if errors.Is(last, ErrTLSRequired) {
		return nil, &routeError{Code: 451, Enhanced: "4.7.10", Text: errorText(last)}
	}
	if errors.Is(last, ErrMTASTS) {
		// RFC 8461 5: in enforce mode a failed TLS negotiation defers.
		return nil, &routeError{Code: 451, Enhanced: "4.7.5", Text: errorText(last)}
	}
	if errors.Is(last, ErrDANE) {
		// RFC 7672 2.2 / RFC 3463 4.7.5: cryptographic failure.
		return nil, &routeError{Code: 451, Enhanced: "4.7.5", Text: errorText(last)}
	}
	return nil, &routeError{Code: 451, Enhanced: "4.4.1", Text: "no MX of " + domain + " reachable; last error: " + errorText(last), rateLimit: rateLimited}
}

// addrs resolves a host name (or takes an IP literal), and says whether
// the answer was DNSSEC-validated.
func (e *Engine) addrs(ctx context.Context, name string) ([]netip.Addr, bool, error) {
	if a, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return []netip.Addr{a}, false, nil
	}
	ips, info, err := e.res.IP(ctx, name)
	if errors.Is(err, resolver.ErrNotFound) {
		return nil, false, nil
	}
	if e.sourceIP.IsValid() {
		// Only the family the source address can reach.
		ips = slices.DeleteFunc(ips, func(a netip.Addr) bool { return a.Is4() != e.sourceIP.Is4() })
	}
	return ips, info.Authentic, err
}

// session dials one address and prepares the session.
func (e *Engine) session(ctx context.Context, addr netip.AddrPort, h host, tlsa []resolver.TLSA) (*session, error) {
	name := h.name
	s, err := e.open(ctx, addr, h, tlsa, true)
	if err != nil && !e.relayRequireTLS && tlsa == nil && h.sts != stsEnforce && errors.As(err, new(tlsFailure)) {
		// RFC 7435 (opportunistic security): a failed handshake with a
		// server that is not required to do TLS is retried in the clear.
		e.log.Info("outbound: TLS handshake failed, retrying without TLS", "host", name, "addr", addr, "err", err)
		s, err = e.open(ctx, addr, h, nil, false)
	}
	return s, err
}

type tlsFailure struct{ error }

func (e *Engine) open(ctx context.Context, addr netip.AddrPort, h host, tlsa []resolver.TLSA, tryTLS bool) (*session, error) {
	name := h.name
	s, err := dial(ctx, addr, e.sourceIP, name, e.timeouts)
	if err != nil {
		return nil, err
	}
	// Close the connection if the engine stops while the session waits,
	// for as long as the session lives (quit stops watching).
	raw := s.conn
	s.unwatch = context.AfterFunc(ctx, func() { raw.Close() })
	if err := s.hello(e.hostname); err != nil {
		s.quit()
		return nil, err
	}
	switch {
	case tlsa != nil && !s.has("STARTTLS"):
		// RFC 7672 2.2: with usable TLSA records, TLS is required.
		s.quit()
		return nil, fmt.Errorf("%w: %s has TLSA records but does not offer STARTTLS", ErrDANE, name)
	case tlsa != nil:
		if err := s.startTLS(daneConfig(e.tlsConfig(name), name, tlsa)); err != nil {
			s.quit()
			return nil, fmt.Errorf("%w: %v", ErrDANE, err)
		}
	// RFC 8461 2: DANE, when it applies, takes precedence over MTA-STS.
	case h.sts == stsEnforce && !s.has("STARTTLS"):
		s.quit()
		return nil, fmt.Errorf("%w: %s does not offer STARTTLS", ErrMTASTS, name)
	case h.sts == stsEnforce:
		if err := s.startTLS(e.stsConfig(e.tlsConfig(name), name, h.sts)); err != nil {
			s.quit()
			return nil, fmt.Errorf("%w: %v", ErrMTASTS, err)
		}
	case h.sts == stsTesting && tryTLS && !s.has("STARTTLS"):
		e.log.Info("outbound: MX host does not offer STARTTLS (MTA-STS testing mode, delivering)", "host", name)
	case h.sts == stsTesting && tryTLS && !e.noTLS:
		if err := s.startTLS(e.stsConfig(e.tlsConfig(name), name, h.sts)); err != nil {
			s.quit()
			return nil, tlsFailure{err}
		}
	case tryTLS && s.has("STARTTLS") && !e.noTLS:
		if err := s.startTLS(e.tlsConfig(name)); err != nil {
			s.quit()
			if e.relayRequireTLS {
				return nil, fmt.Errorf("%w: %v", ErrTLSRequired, err)
			}
			return nil, tlsFailure{err}
		}
	case e.relayRequireTLS:
		s.quit()
		return nil, fmt.Errorf("%w: %s did not offer STARTTLS", ErrTLSRequired, name)
	}
	if e.relayUser != "" {
		if !s.tls && !addr.Addr().IsLoopback() {
			s.quit()
			return nil, fmt.Errorf("%w: not sending the relay password to %s in the clear", ErrTLSRequired, name)
		}
		if err := s.auth(e.relayUser, e.relayPass); err != nil {
			s.quit()
			return nil, err
		}
	}
	return s, nil
}

func (e *Engine) tlsConfig(name string) *tls.Config {
	cfg := &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12}
	if e.opts.TLSConfig != nil {
		cfg = e.opts.TLSConfig.Clone()
		cfg.ServerName = name
	}
	if !e.relayRequireTLS {
		// Opportunistic TLS verifies nothing (RFC 7435, RFC 3207 4.1):
		// most MX certificates would not pass, and refusing them would
		// mean sending in the clear instead.
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// parseHostPort parses "HOST:PORT" or "HOST" (port 25 then).
func parseHostPort(s string, def int) (host, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return host{name: strings.Trim(s, "[]"), port: def}, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return host{}, fmt.Errorf("bad port in %q", s)
	}
	return host{name: h, port: n}, nil
}
