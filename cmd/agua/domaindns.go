package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/dnsrecords"
)

// errChecksFailed makes `agua domain check` exit 1 once every line is out.
var errChecksFailed = errors.New("some records are missing or differ")

// domainRecords builds the records of a local domain from the config and
// the data folder; it works with the server stopped.
func domainRecords(e *env, ctx context.Context, d accounts.Admin, domain string) ([]dnsrecords.Record, bool, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	ds, err := d.ListDomains(ctx)
	if err != nil {
		return nil, false, err
	}
	if !slices.Contains(ds, domain) {
		return nil, false, fmt.Errorf("%s is not a local domain (agua domain add %s)", domain, domain)
	}
	keys, err := dkim.LoadKeys(e.cfg.DataDir)
	if err != nil {
		fmt.Fprintln(e.stderr, "agua: warning:", err)
	}
	recs := dnsrecords.Build(dnsrecords.Params{
		Domain:   domain,
		Services: dnsrecords.FromConfig(e.cfg),
		IPs:      e.cfg.Autoconfig.PublicIPs,
		Keys:     keys,
		Now:      time.Now(),
		MTASTS:   dnsrecords.PolicyParams{Mode: e.cfg.Autoconfig.MTASTSMode, MaxAge: e.cfg.Autoconfig.MTASTSMaxAge},
	})
	hasKey := slices.ContainsFunc(recs, func(r dnsrecords.Record) bool { return strings.Contains(r.Name, "._domainkey.") })
	return recs, hasKey, nil
}

// dnsFlags are the flags of `agua domain check`.
type dnsFlags struct {
	resolver *string
	timeout  *time.Duration
}

func domainDNSFlags(e *env) dnsFlags {
	return dnsFlags{
		resolver: e.flags.String("resolver", "", "DNS server (host:port) that domain check asks"),
		timeout:  e.flags.Duration("timeout", 5*time.Second, "time allowed per query (domain check)"),
	}
}

// domainDNS is `agua domain dns DOMAIN` and `agua domain check DOMAIN
// -resolver ADDR`; pos is [dns|check DOMAIN].
func domainDNS(e *env, ctx context.Context, d accounts.Admin, pos []string, f dnsFlags) error {
	recs, hasKey, err := domainRecords(e, ctx, d, pos[1])
	if err != nil {
		return err
	}
	if pos[0] == "dns" {
		fmt.Fprintf(e.stdout, "; DNS records for %s, served by %s\n", strings.ToLower(pos[1]), e.cfg.Hostname)
		if !strings.Contains(strings.Trim(e.cfg.Hostname, "."), ".") {
			fmt.Fprintf(e.stdout, "; warning: hostname %q is not a public name: set hostname in the config first\n", e.cfg.Hostname)
		}
		for _, r := range recs {
			fmt.Fprintf(e.stdout, "\n; %s\n%s\n", r.Comment, r.Zone())
		}
		if !hasKey {
			fmt.Fprintf(e.stdout, "\n; no DKIM key for this domain: run `agua dkim keygen %s` and publish the record it prints\n", strings.ToLower(pos[1]))
		}
		return nil
	}
	if *f.resolver == "" {
		return usagef("domain check DOMAIN -resolver HOST:PORT")
	}
	server, err := resolverAddr(*f.resolver)
	if err != nil {
		return err
	}
	res := dnsrecords.Checker{Server: server, Timeout: *f.timeout}.Check(ctx, recs)
	failed, unanswered := 0, 0
	for _, r := range res {
		fmt.Fprintln(e.stdout, r)
		if r.Status != dnsrecords.OK {
			failed++
		}
		if r.Status == dnsrecords.Failed {
			unanswered++
		}
	}
	if !hasKey {
		fmt.Fprintf(e.stdout, "no DKIM key for this domain: run `agua dkim keygen %s`\n", strings.ToLower(pos[1]))
	}
	if unanswered == len(res) && len(res) > 0 {
		// Nothing was compared: the records are not "missing", the server
		// is not there (or drops the queries).
		return fmt.Errorf("%w: the DNS server %s answered none of the %d queries; is it the right address, and does it run?", errChecksFailed, server, len(res))
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d", errChecksFailed, failed, len(res))
	}
	return nil
}

// resolverAddr is the -resolver of domain check as HOST:PORT: a bare
// address (9.9.9.9, 2620:fe::fe) gets DNS's port 53.
func resolverAddr(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	host, port, err := net.SplitHostPort(s)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return "", usagef("-resolver %q: want a DNS server's address, HOST:PORT (e.g. 9.9.9.9:53) or an IP address", s)
	}
	return s, nil
}
