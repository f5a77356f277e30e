package mailauth

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/agua-mail/agua/internal/resolver"
)

// Resolver is the DNS the checks use: *resolver.Resolver, so that SPF, DKIM
// and DMARC share its cache, timeouts and upstreams with outbound delivery.
type Resolver interface {
	TXT(ctx context.Context, name string) ([]string, resolver.Info, error)
	MX(ctx context.Context, domain string) ([]resolver.MX, resolver.Info, error)
	IP(ctx context.Context, host string) ([]netip.Addr, resolver.Info, error)
	PTR(ctx context.Context, addr netip.Addr) ([]string, resolver.Info, error)
}

// dnsError turns a resolver error into the *net.DNSError that the SPF and
// DKIM libraries classify: "not found" (NXDOMAIN: RFC 7208 4.3 none, a void
// lookup in 4.6.4) and "temporary" (timeout, SERVFAIL: temperror, RFC 7208
// 2.6.6, RFC 6376 6.1.2) are told apart by errors.Is, never by text.
func dnsError(name string, err error) error {
	if err == nil {
		return nil
	}
	de := &net.DNSError{Err: err.Error(), Name: name}
	switch {
	case errors.Is(err, resolver.ErrNotFound):
		de.IsNotFound = true
	case errors.Is(err, resolver.ErrTemporary):
		de.IsTemporary = true
		de.IsTimeout = errors.Is(err, context.DeadlineExceeded)
	}
	return de
}

// isTemp reports whether err is a temporary DNS failure.
func isTemp(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.Temporary() || errors.Is(err, resolver.ErrTemporary)
}

// spfDNS adapts a Resolver to blitiri.com.ar/go/spf's DNSResolver. The
// library counts lookups and void lookups itself (RFC 7208 4.6.4: at most
// 10 mechanisms that query DNS, at most 2 void answers).
type spfDNS struct{ r Resolver }

func (d spfDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, _, err := d.r.TXT(ctx, name)
	return txt, dnsError(name, err)
}

func (d spfDNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, _, err := d.r.MX(ctx, name)
	if err != nil {
		return nil, dnsError(name, err)
	}
	out := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		if mx.Host != "" { // a null MX (RFC 7505) names no host
			out = append(out, &net.MX{Host: mx.Host + ".", Pref: mx.Pref})
		}
	}
	return out, nil
}

func (d spfDNS) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, _, err := d.r.IP(ctx, strings.TrimSuffix(host, "."))
	if err != nil {
		return nil, dnsError(host, err)
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: ip.AsSlice()}
	}
	return out, nil
}

func (d spfDNS) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: addr}
	}
	names, _, err := d.r.PTR(ctx, a)
	if err != nil {
		return nil, dnsError(addr, err)
	}
	for i, n := range names {
		names[i] = n + "."
	}
	return names, nil
}

// txtLookup returns the TXT lookup function of the DKIM and DMARC
// libraries, bound to ctx (they take no context of their own).
func txtLookup(ctx context.Context, r Resolver) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		txt, _, err := r.TXT(ctx, name)
		return txt, dnsError(name, err)
	}
}
