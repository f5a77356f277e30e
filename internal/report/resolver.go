package report

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Resolver looks up PTR records (RFC 1035 3.5) of offending addresses at
// one DNS server, with a short timeout and a bounded number of lookups, so
// a report of a botnet does not turn into a DNS flood of its own.
type Resolver struct {
	Server  string        // host:port of the DNS server, e.g. "127.0.0.1:53"
	Timeout time.Duration // per lookup; 0 = 2s
	Max     int           // most lookups per report; 0 = 200
}

const lookupWorkers = 8

func (r *Resolver) resolve(ctx context.Context, offs []*Offender) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	limit := r.Max
	if limit <= 0 {
		limit = 200
	}
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, r.Server)
	}}
	var todo []*Offender
	for _, o := range offs {
		if o.Addr.IsSingleIP() && len(todo) < limit {
			todo = append(todo, o)
		}
	}
	ch := make(chan *Offender)
	var wg sync.WaitGroup
	for range min(lookupWorkers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range ch {
				lctx, cancel := context.WithTimeout(ctx, timeout)
				names, err := res.LookupAddr(lctx, o.Addr.Addr().String())
				cancel()
				if err == nil && len(names) > 0 {
					o.PTR = strings.TrimSuffix(names[0], ".")
				}
			}
		}()
	}
	for _, o := range todo {
		ch <- o
	}
	close(ch)
	wg.Wait()
}

// domainOf returns the registered domain of a host name
// ("mail7.dsl.example-isp.net" -> "example-isp.net"), or "".
func domainOf(host string) string {
	d, err := publicsuffix.EffectiveTLDPlusOne(strings.ToLower(host))
	if err != nil {
		return ""
	}
	return d
}

// commonDomain is the reverse DNS domain most of the offenders share.
func commonDomain(offs []*Offender) string {
	count := map[string]int{}
	best := ""
	for _, o := range offs {
		if d := domainOf(o.PTR); d != "" {
			count[d]++
			if count[d] > count[best] || (count[d] == count[best] && d < best) {
				best = d
			}
		}
	}
	return best
}
