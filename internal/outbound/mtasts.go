package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/agua-mail/agua/internal/mtasts"
)

// ErrMTASTS: an MX host of a domain with an MTA-STS policy in enforce mode
// (RFC 8461 5) did not offer STARTTLS or presented a certificate that does
// not verify for its name. Temporary: the mail waits.
var ErrMTASTS = errors.New("outbound: MTA-STS policy not met")

// Policies gives the MTA-STS policy of a destination domain
// (*mtasts.Cache); false when none applies.
type Policies interface {
	Policy(ctx context.Context, domain string) (mtasts.Policy, bool)
}

// stsMode is what a domain's MTA-STS policy asks of one connection.
type stsMode uint8

const (
	stsNone    stsMode = iota
	stsTesting         // verify, log failures, deliver anyway
	stsEnforce         // verified TLS or no delivery
)

// applySTS filters the MX hosts of domain by its MTA-STS policy
// (RFC 8461 4.1: only hosts matching an mx pattern may receive in enforce
// mode; testing mode logs them and uses them all) and marks each host with
// what its connection must meet.
func (e *Engine) applySTS(ctx context.Context, domain string, hosts []host) ([]host, *routeError) {
	if e.sts == nil || e.relay.name != "" {
		return hosts, nil
	}
	p, ok := e.sts.Policy(ctx, domain)
	if !ok {
		return hosts, nil
	}
	mode := stsTesting
	if p.Mode == mtasts.Enforce {
		mode = stsEnforce
	}
	out := hosts[:0:0]
	for _, h := range hosts {
		if !p.Match(h.name) {
			if mode == stsEnforce {
				e.log.Info("outbound: MX host not in the MTA-STS policy, skipped", "domain", domain, "host", h.name, "policy_mx", strings.Join(p.MX, ","))
				continue
			}
			e.log.Info("outbound: MX host not in the MTA-STS policy (testing mode, delivering)", "domain", domain, "host", h.name, "policy_mx", strings.Join(p.MX, ","))
		}
		h.sts = mode
		out = append(out, h)
	}
	if len(out) == 0 {
		// RFC 8461 5: no matching MX: the message is not delivered (and
		// waits for the policy or the MX records to change).
		return nil, &routeError{Code: 451, Enhanced: "4.7.5", Text: fmt.Sprintf("%v: no MX host of %s matches its policy (mx: %s)", ErrMTASTS, domain, strings.Join(p.MX, ", "))}
	}
	return out, nil
}

// stsConfig verifies the peer's certificate as RFC 8461 4.2 requires: a
// chain to a trusted root (PKIX, RFC 5280), valid for the MX host's name
// (RFC 6125). In testing mode a failure is logged and the session goes on.
func (e *Engine) stsConfig(base *tls.Config, name string, mode stsMode) *tls.Config {
	cfg := base.Clone()
	cfg.InsecureSkipVerify = true // VerifyConnection does the checking
	var roots *x509.CertPool
	if e.opts.TLSConfig != nil {
		roots = e.opts.TLSConfig.RootCAs
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verifyPKIX(cs, name, roots)
		if err != nil && mode == stsTesting {
			e.log.Info("outbound: MTA-STS certificate check failed (testing mode, delivering)", "host", name, "err", err)
			return nil
		}
		return err
	}
	return cfg
}

func verifyPKIX(cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: strings.TrimSuffix(name, "."), Roots: roots, Intermediates: inter})
	return err
}
