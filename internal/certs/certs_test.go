package certs

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"slices"
	"testing"

	"github.com/agua-mail/agua/internal/tlsutil"
)

func fallback(t *testing.T) tls.Certificate {
	t.Helper()
	dir := t.TempDir()
	cfg, _, err := tlsutil.LoadOrCreate(filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), []string{"mx.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Certificates[0]
}

// handshake runs a TLS handshake over a pipe, the client offering alpn.
func handshake(t *testing.T, server *tls.Config, alpn ...string) (tls.ConnectionState, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go tls.Server(s, server).Handshake()
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test", NextProtos: alpn})
	err := tc.Handshake()
	return tc.ConnectionState(), err
}

// A mail client that offers its own ALPN protocol ("imap", as clients
// hardened against cross-protocol attacks do) is served on a mail
// listener: the listener announces none, so there is no mismatch to refuse
// (Go refuses a client whose protocols all differ from the server's). Without ACME the fallback is served.
func TestMailListenerALPNAndFallback(t *testing.T) {
	src := NewSource(fallback(t), nil)
	st, err := handshake(t, src.TLSConfig(), "imap")
	if err != nil {
		t.Fatalf("client offering ALPN imap refused: %v", err)
	}
	if org := st.PeerCertificates[0].Subject.Organization; len(org) == 0 || org[0] != "agua self-signed" {
		t.Fatalf("served %v", org)
	}
	// HTTPS listeners negotiate http/1.1; acme-tls/1 only with TLS-ALPN-01.
	if got := src.HTTPSConfig().NextProtos; !slices.Equal(got, []string{"http/1.1"}) {
		t.Fatalf("HTTPS without ACME: %v", got)
	}
	withALPN := NewSource(fallback(t), &ACME{tlsALPN: true})
	if got := withALPN.HTTPSConfig().NextProtos; !slices.Contains(got, ACMETLS1) {
		t.Fatalf("HTTPS with TLS-ALPN-01: %v", got)
	}
	if got := withALPN.TLSConfig().NextProtos; len(got) != 0 {
		t.Fatalf("mail listener announces %v", got)
	}
}
