package outbound

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/agua-mail/agua/internal/resolver"
)

// ErrDANE: a host with usable TLSA records (RFC 7672) did not offer TLS or
// presented a certificate its records do not match. Temporary: the mail
// waits, it never goes in the clear.
var ErrDANE = errors.New("outbound: DANE authentication failed")

// TLSA usages, selectors and matching types agua acts on (RFC 7672 3.1:
// only DANE-TA(2) and DANE-EE(3) apply to SMTP).
const (
	usageDANETA = 2
	usageDANEEE = 3
)

// daneRecords looks up the TLSA records of a host found through validated
// DNS and returns the usable ones (nil: no DANE for this host). A failed
// lookup is an error: RFC 7672 2.2 forbids falling back to no
// authentication then.
func (e *Engine) daneRecords(ctx context.Context, h host) ([]resolver.TLSA, error) {
	recs, info, err := e.res.TLSA(ctx, h.port, h.name)
	switch {
	case errors.Is(err, resolver.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("%w: TLSA lookup for %s failed: %v", ErrDANE, h.name, err)
	case !info.Authentic:
		// RFC 7672 2.2: insecure TLSA records are ignored.
		return nil, nil
	}
	var usable []resolver.TLSA
	for _, r := range recs {
		if (r.Usage == usageDANETA || r.Usage == usageDANEEE) && r.Selector <= 1 && r.MatchingType <= 2 {
			usable = append(usable, r)
		}
	}
	return usable, nil
}

// daneConfig verifies the peer's certificate against the TLSA records
// instead of the Web PKI (RFC 7672 3): DANE-EE matches the leaf and needs
// no name or date check (3.1.1); DANE-TA matches a certificate of the
// chain, which must then validate up to it for the MX host name (3.1.2).
func daneConfig(base *tls.Config, name string, recs []resolver.TLSA) *tls.Config {
	cfg := base.Clone()
	cfg.InsecureSkipVerify = true // VerifyConnection does the checking
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no certificate")
		}
		leaf := cs.PeerCertificates[0]
		for _, r := range recs {
			switch r.Usage {
			case usageDANEEE:
				if tlsaMatch(r, leaf) {
					return nil
				}
			case usageDANETA:
				for _, ta := range cs.PeerCertificates[1:] {
					if !tlsaMatch(r, ta) {
						continue
					}
					roots := x509.NewCertPool()
					roots.AddCert(ta)
					inter := x509.NewCertPool()
					for _, c := range cs.PeerCertificates[1:] {
						inter.AddCert(c)
					}
					if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err == nil {
						return nil
					}
				}
			}
		}
		return fmt.Errorf("certificate of %s matches none of its %d TLSA records", name, len(recs))
	}
	return cfg
}

// tlsaMatch compares a certificate with one TLSA record (RFC 6698 2.1).
func tlsaMatch(r resolver.TLSA, c *x509.Certificate) bool {
	data := c.Raw
	if r.Selector == 1 {
		data = c.RawSubjectPublicKeyInfo
	}
	switch r.MatchingType {
	case 1:
		sum := sha256.Sum256(data)
		data = sum[:]
	case 2:
		sum := sha512.Sum512(data)
		data = sum[:]
	}
	return bytes.Equal(data, r.Data)
}
