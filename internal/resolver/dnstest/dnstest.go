// Package dnstest runs an authoritative-looking DNS server on a loopback
// address for tests, with github.com/miekg/dns: records given in zone file
// syntax, chosen failures (an rcode, silence, truncation), the AD bit on or
// off, and a count of the queries each name received. Tests of agua never
// ask any other resolver.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a DNS server on UDP and TCP of one loopback address and port.
type Server struct {
	Addr string // host:port, the same for UDP and TCP

	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case FQDN
	rcodes   map[key]int
	silent   map[key]bool
	dead     bool                  // SilentAll
	hold     map[key]chan struct{} // Hold: answered once closed
	truncate map[key]bool
	ad       bool
	negTTL   uint32
	queries  map[key]int
	tcp      map[key]int
}

type key struct {
	name  string
	qtype uint16
}

// Start runs a server on ip (e.g. "127.0.0.53") until the test ends.
func Start(t testing.TB, ip string) *Server {
	t.Helper()
	s := &Server{
		records: map[string][]dns.RR{}, rcodes: map[key]int{}, silent: map[key]bool{}, hold: map[key]chan struct{}{},
		truncate: map[key]bool{}, queries: map[key]int{}, tcp: map[key]int{}, negTTL: 300,
	}
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try > 20 {
			t.Fatalf("dnstest: no port free on both UDP and TCP: %v", err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
	tcp := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(s.serve)}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	return s
}

// Add adds records in zone file syntax ("mx.test. 300 IN MX 10 a.mx.test.").
func (s *Server) Add(t testing.TB, records ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("dnstest: %q: %v", r, err)
		}
		n := strings.ToLower(rr.Header().Name)
		s.records[n] = append(s.records[n], rr)
	}
}

// Remove deletes every record of name.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, strings.ToLower(dns.Fqdn(name)))
}

// Rcode makes queries for name and type answer with rcode
// (dns.RcodeServerFailure, ...); dns.RcodeSuccess undoes it.
func (s *Server) Rcode(name string, qtype uint16, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcodes[key{strings.ToLower(dns.Fqdn(name)), qtype}] = rcode
}

// Silent makes queries for name and type go unanswered (a timeout).
func (s *Server) Silent(name string, qtype uint16, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.silent[key{strings.ToLower(dns.Fqdn(name)), qtype}] = on
}

// SilentAll makes every query go unanswered: a dead upstream.
func (s *Server) SilentAll(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = on
}

// Hold makes queries for name and type wait, received and counted but
// unanswered, until release is called (a slow list). release is safe to
// call more than once; the test's end releases what is left.
func (s *Server) Hold(t testing.TB, name string, qtype uint16) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold[key{strings.ToLower(dns.Fqdn(name)), qtype}] = ch
	s.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return release
}

// Truncate makes UDP answers for name and type empty with the TC bit.
func (s *Server) Truncate(name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate[key{strings.ToLower(dns.Fqdn(name)), qtype}] = true
}

// SetAD sets the AD bit of every answer (an upstream that validated).
func (s *Server) SetAD(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ad = on
}

// SetNegativeTTL sets the SOA TTL and MINIMUM of negative answers.
func (s *Server) SetNegativeTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negTTL = ttl
}

// Queries returns how many queries name and type received (UDP and TCP).
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key{strings.ToLower(dns.Fqdn(name)), qtype}]
}

// TCPQueries returns how many queries for name and type came over TCP.
func (s *Server) TCPQueries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcp[key{strings.ToLower(dns.Fqdn(name)), qtype}]
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	k := key{strings.ToLower(q.Name), q.Qtype}
	_, isTCP := w.RemoteAddr().(*net.TCPAddr)
	s.mu.Lock()
	s.queries[k]++
	if isTCP {
		s.tcp[k]++
	}
	silent, trunc := s.silent[k] || s.dead, s.truncate[k]
	hold := s.hold[k]
	rcode, hasRcode := s.rcodes[k]
	ad, negTTL := s.ad, s.negTTL
	var answer []dns.RR
	all, exists := s.records[k.name]
	for _, rr := range all {
		if rr.Header().Rrtype == q.Qtype {
			answer = append(answer, dns.Copy(rr))
		}
	}
	if len(answer) == 0 {
		// Follow one CNAME, as a recursive resolver would.
		for _, rr := range all {
			if c, ok := rr.(*dns.CNAME); ok {
				answer = append(answer, dns.Copy(c))
				for _, t := range s.records[strings.ToLower(c.Target)] {
					if t.Header().Rrtype == q.Qtype {
						answer = append(answer, dns.Copy(t))
					}
				}
			}
		}
	}
	s.mu.Unlock()
	if silent {
		return
	}
	if hold != nil {
		<-hold
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	switch {
	case hasRcode && rcode != dns.RcodeSuccess:
		m.Rcode = rcode
	case trunc && !isTCP:
		m.Truncated = true
	default:
		m.Answer = answer
		m.AuthenticatedData = ad
		if len(answer) == 0 {
			if !exists {
				m.Rcode = dns.RcodeNameError
			}
			m.Ns = []dns.RR{&dns.SOA{
				Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
				Ns:  "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: negTTL,
			}}
		}
	}
	w.WriteMsg(m)
}
