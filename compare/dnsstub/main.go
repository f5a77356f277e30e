// Command dnsstub is the DNS server of compare/durable.sh's AUTH=1 runs: an
// authoritative answer for the benchmark's sender domain, so that agua's
// SPF and DMARC checks (issue 14) run against real answers, cached for
// their TTL like records of a real domain, and never leave the machine.
//
//	go run ./compare/dnsstub -listen 127.0.0.1:5399 -domain bench.example
//
// DOMAIN gets an SPF record passing 127.0.0.0/8 and a DMARC record with
// p=none; every other name is NXDOMAIN with a one-hour negative TTL.
package main

import (
	"flag"
	"log"
	"strings"

	"github.com/miekg/dns"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5399", "UDP and TCP address")
	domain := flag.String("domain", "bench.example", "the sender domain")
	flag.Parse()
	zone := dns.Fqdn(strings.ToLower(*domain))
	txt := map[string]string{
		zone:             "v=spf1 ip4:127.0.0.0/8 -all",
		"_dmarc." + zone: "v=DMARC1; p=none",
	}
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
		Ns: "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 3600}
	dns.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 {
			q := r.Question[0]
			name := strings.ToLower(q.Name)
			if t, ok := txt[name]; ok {
				if q.Qtype == dns.TypeTXT {
					m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 3600}, Txt: []string{t}})
				} else {
					m.Ns = append(m.Ns, soa)
				}
			} else {
				m.Rcode = dns.RcodeNameError
				m.Ns = append(m.Ns, soa)
			}
		}
		w.WriteMsg(m)
	})
	errs := make(chan error, 2)
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *listen, Net: network}
		go func() { errs <- srv.ListenAndServe() }()
	}
	log.Fatal(<-errs)
}
