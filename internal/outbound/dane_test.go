package outbound

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/miekg/dns"
)

func spkiSHA256(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	c, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// TestDANE (RFC 7672): with validated MX, address and TLSA answers, TLS is
// required and the certificate must match a TLSA record (DANE-EE: the
// leaf's key, whatever its name); otherwise the mail waits, it never goes
// in the clear. Without the AD bit, TLSA records are ignored.
func TestDANE(t *testing.T) {
	srvTLS, _ := testTLS(t, "not-the-mx-name.test") // DANE-EE ignores names
	good := spkiSHA256(t, srvTLS)
	bad := strings.Repeat("ab", 32)
	cases := []struct {
		name      string
		ad        bool
		tlsa      string // hex SHA-256 of the SPKI; "" for none
		servfail  bool
		peerTLS   bool
		delivered bool
		reply     string
	}{
		{"match", true, good, false, true, true, ""},
		{"mismatch", true, bad, false, true, false, "4.7.5"},
		{"no STARTTLS", true, good, false, false, false, "does not offer STARTTLS"},
		{"TLSA lookup fails", true, "", true, true, false, "TLSA lookup"},
		{"insecure answers ignored", false, bad, false, true, true, ""},
		{"no TLSA records", true, "", false, false, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port, lns := listenSamePort(t, "127.0.0.85")
			p := newPeer(t, lns[0])
			if tc.peerTLS {
				p.tls = srvTLS
			}
			startPeers(p)
			ev := newEnv(t, port, nil)
			ev.dns.SetAD(tc.ad)
			ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.85")
			tlsaName := fmt.Sprintf("_%d._tcp.mx.dest.test.", port)
			if tc.tlsa != "" {
				ev.dns.Add(t, tlsaName+" 300 IN TLSA 3 1 1 "+tc.tlsa)
			}
			if tc.servfail {
				ev.dns.Rcode(tlsaName, dns.TypeTLSA, dns.RcodeServerFailure)
			}
			id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
			if tc.delivered {
				ev.waitGone(id)
				r := p.received()
				if len(r) != 1 || r[0].tls != tc.peerTLS {
					t.Fatalf("received %+v", r)
				}
				return
			}
			m := ev.waitState(id, queue.Deferred)
			if !strings.Contains(m.Rcpts[0].Reply, tc.reply) {
				t.Fatalf("reply %q, want %q", m.Rcpts[0].Reply, tc.reply)
			}
			if p.sawMail() {
				t.Fatal("mail sent although DANE failed")
			}
		})
	}
}

// TestDANETA: DANE-TA(2) matches a CA of the chain the server sends; the
// leaf must chain to it and carry the MX host's name (RFC 7672 3.1.2).
func TestDANETA(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test TA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
	}
	sum := sha256.Sum256(ca.Raw)
	for _, tc := range []struct {
		certName  string
		delivered bool
	}{{"mx.dest.test", true}, {"someone-else.test", false}} {
		t.Run(tc.certName, func(t *testing.T) {
			port, lns := listenSamePort(t, "127.0.0.86")
			p := newPeer(t, lns[0])
			p.tls = &tls.Config{Certificates: []tls.Certificate{leaf(tc.certName)}}
			startPeers(p)
			ev := newEnv(t, port, nil)
			ev.dns.SetAD(true)
			ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.86",
				fmt.Sprintf("_%d._tcp.mx.dest.test. 300 IN TLSA 2 0 1 %x", port, sum))
			id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
			if tc.delivered {
				ev.waitGone(id)
				if r := p.received(); len(r) != 1 || !r[0].tls {
					t.Fatalf("received %+v", r)
				}
				return
			}
			if m := ev.waitState(id, queue.Deferred); !strings.Contains(m.Rcpts[0].Reply, "4.7.5") {
				t.Fatalf("reply %q", m.Rcpts[0].Reply)
			}
		})
	}
}
