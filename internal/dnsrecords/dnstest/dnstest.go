// Package dnstest runs a small authoritative DNS server on loopback for
// tests: it answers from a list of zone-file lines and nothing else, so a
// test never asks a real resolver.
package dnstest

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// Serve answers UDP and TCP queries on ip (a 127.x.y.z address, port
// chosen by the system) from the records in zone (zone-file syntax, one
// per line). Names without records get NXDOMAIN. It returns host:port and
// stops when the test ends.
func Serve(t testing.TB, ip string, zone []string) string {
	t.Helper()
	var rrs []dns.RR
	for _, line := range zone {
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("dnstest: %q: %v", line, err)
		}
		rrs = append(rrs, rr)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		known := false
		for _, rr := range rrs {
			h := rr.Header()
			if !strings.EqualFold(h.Name, q.Question[0].Name) {
				continue
			}
			known = true
			if h.Rrtype == q.Question[0].Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if !known {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	started := make(chan struct{}, 2)
	up := func() { started <- struct{}{} }
	udp := &dns.Server{PacketConn: pc, Handler: handler, NotifyStartedFunc: up}
	tcp := &dns.Server{Listener: ln, Handler: handler, NotifyStartedFunc: up}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return addr
}
