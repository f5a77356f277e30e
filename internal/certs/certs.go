// Package certs gives every TLS listener its certificate through
// tls.Config.GetCertificate: the operator's files, agua's self-signed pair,
// or certificates obtained and renewed from an ACME CA (RFC 8555), with the
// TLS-ALPN-01 (RFC 8737) or HTTP-01 (RFC 8555 8.3) challenge.
//
// ACME is done by github.com/caddyserver/certmagic rather than go-acme/lego:
// lego obtains a certificate and stops there, while agua needs the whole
// life cycle that certmagic already runs in Caddy: an in-memory cache that
// GetCertificate reads on every handshake (so a renewal applies to the next
// connection without restart), background renewal with backoff and retry,
// ARI (renewal information) when the CA offers it, locking of its storage
// folder and the TLS-ALPN-01 challenge answered from the same
// GetCertificate. With lego, each of these would be agua's own code.
package certs

import (
	"crypto/tls"
	"sync/atomic"
)

// Source answers GetCertificate for every TLS listener. The fallback
// certificate (the operator's or the self-signed pair) is served until an
// ACME certificate for the name exists, and whenever ACME is off.
type Source struct {
	fallback atomic.Pointer[tls.Certificate]
	acme     *ACME // nil: ACME off
}

// NewSource serves fallback, and ACME certificates when acme is not nil.
func NewSource(fallback tls.Certificate, acme *ACME) *Source {
	s := &Source{acme: acme}
	s.fallback.Store(&fallback)
	return s
}

// GetCertificate is tls.Config.GetCertificate. A TLS-ALPN-01 validation
// handshake (ALPN acme-tls/1) gets the challenge certificate.
func (s *Source) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.acme != nil {
		if c, err := s.acme.getCertificate(hello); err == nil && c != nil {
			return c, nil
		}
	}
	return s.fallback.Load(), nil
}

// TLSConfig is the config of a mail listener (SMTP, POP3, IMAP). It
// announces no ALPN protocol: a mail client that offers one ("imap",
// "smtp") must not be refused for the lack of a match.
func (s *Source) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.GetCertificate}
}

// HTTPSConfig is the config of an HTTPS listener. With ACME's TLS-ALPN-01
// it also negotiates acme-tls/1 (RFC 8737 3), so the listener on port 443
// can answer the CA's validation itself.
func (s *Source) HTTPSConfig() *tls.Config {
	c := s.TLSConfig()
	c.NextProtos = []string{"http/1.1"}
	if s.acme != nil && s.acme.tlsALPN {
		c.NextProtos = append(c.NextProtos, ACMETLS1)
	}
	return c
}

// ACMETLS1 is the ALPN protocol of TLS-ALPN-01 validation (RFC 8737 6.2).
const ACMETLS1 = "acme-tls/1"
