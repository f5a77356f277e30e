// Package mtaststest serves MTA-STS policy files (RFC 8461 3.3) over HTTPS
// on a loopback address for tests: a certificate of its own for every
// mta-sts.DOMAIN it serves, the pool that trusts it, and a dialer that
// sends any host name to the server, so no test asks real DNS.
package mtaststest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/agua-mail/agua/internal/tlsutil"
)

// Server is an HTTPS server of policy files.
type Server struct {
	RootCAs *x509.CertPool // trusts the server's certificate
	Addr    string         // host:port

	mu       sync.Mutex
	policies map[string]string // host → policy body
	fetches  map[string]int
	status   map[string]int
	ctype    string
}

// Start serves on ip (e.g. "127.0.0.90") with a certificate valid for
// "mta-sts.DOMAIN" of each domain given, until the test ends.
func Start(t testing.TB, ip string, domains ...string) *Server {
	t.Helper()
	names := make([]string, len(domains))
	for i, d := range domains {
		names[i] = "mta-sts." + d
	}
	dir := t.TempDir()
	cfg, _, err := tlsutil.LoadOrCreate(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), names)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{RootCAs: x509.NewCertPool(), policies: map[string]string{}, fetches: map[string]int{}, status: map[string]int{}, ctype: "text/plain"}
	s.RootCAs.AddCert(leaf)
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	hs.Listener.Close()
	hs.Listener = ln
	hs.TLS = &tls.Config{Certificates: cfg.Certificates}
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
	hs.StartTLS()
	t.Cleanup(hs.Close)
	s.Addr = ln.Addr().String()
	return s
}

// Set serves body as the policy of domain.
func (s *Server) Set(domain, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies["mta-sts."+domain] = body
}

// Status makes the policy of domain answer with an HTTP status (a 3xx
// redirects to another host).
func (s *Server) Status(domain string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status["mta-sts."+domain] = code
}

// Fetches counts the policy requests for domain.
func (s *Server) Fetches(domain string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches["mta-sts."+domain]
}

// Dial connects to the server whatever the address asked for.
func (s *Server) Dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, s.Addr)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	s.mu.Lock()
	s.fetches[host]++
	body, ok := s.policies[host]
	code := s.status[host]
	s.mu.Unlock()
	switch {
	case r.URL.Path != "/.well-known/mta-sts.txt" || !ok:
		http.NotFound(w, r)
	case code >= 300 && code < 400:
		http.Redirect(w, r, "https://elsewhere.test/.well-known/mta-sts.txt", code)
	case code != 0:
		w.WriteHeader(code)
	default:
		w.Header().Set("Content-Type", s.ctype)
		w.Write([]byte(body))
	}
}
