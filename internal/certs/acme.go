package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// ACMEOptions configures certificates from an ACME CA.
type ACMEOptions struct {
	Directory string         // CA directory URL
	Email     string         // account contact; may be empty
	Challenge string         // "tls-alpn-01" or "http-01"
	Listen    string         // host:port where the challenge is answered (bound by the caller)
	CARoots   *x509.CertPool // trusted for the directory's HTTPS; nil: system roots
	Storage   string         // folder for the account, keys and certificates
	Hostname  string         // served when the client sends no SNI or a name without its own certificate
	Logger    *slog.Logger

	// RenewCheck is how often the cache looks for certificates due for
	// renewal (0: certmagic's 10 minutes). Tests with short-lived
	// certificates shorten it.
	RenewCheck time.Duration
}

// ErrNoCertificate: no ACME certificate for the name (yet).
var ErrNoCertificate = errors.New("certs: no ACME certificate for this name yet")

// ACME obtains and renews certificates with certmagic. Names are added
// with Manage; each name gets its own certificate, so a name whose DNS
// does not point here fails alone.
type ACME struct {
	magic   *certmagic.Config
	cache   *certmagic.Cache
	issuer  *certmagic.ACMEIssuer
	log     *slog.Logger
	tlsALPN bool

	mu      sync.Mutex
	managed map[string]bool
}

// NewACME prepares certificate management; nothing is requested before
// Manage.
func NewACME(o ACMEOptions) (*ACME, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("acme challenge listener %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 {
		return nil, fmt.Errorf("acme challenge listener %q: needs a fixed port", o.Listen)
	}
	a := &ACME{log: o.Logger, tlsALPN: o.Challenge == "tls-alpn-01", managed: map[string]bool{}}
	// certmagic's own zap logs stay off: what an operator needs is one
	// line per event (events below), not certmagic's chatter.
	nop := zap.NewNop()
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return a.magic, nil },
		RenewCheckInterval: o.RenewCheck,
		Logger:             nop,
	})
	a.magic = certmagic.New(a.cache, certmagic.Config{
		Storage:            &certmagic.FileStorage{Path: o.Storage},
		DefaultServerName:  o.Hostname,
		FallbackServerName: o.Hostname,
		OnEvent:            a.event,
		Logger:             nop,
	})
	// The challenge listener is agua's own (bound before the CA is asked):
	// certmagic finds the port in use, checks that it answers and lets it
	// serve the challenge, from the same process-wide challenge memory.
	a.issuer = certmagic.NewACMEIssuer(a.magic, certmagic.ACMEIssuer{
		CA:                      o.Directory,
		Email:                   o.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    o.Challenge != "http-01",
		DisableTLSALPNChallenge: o.Challenge != "tls-alpn-01",
		ListenHost:              host,
		AltHTTPPort:             port,
		AltTLSALPNPort:          port,
		TrustedRoots:            o.CARoots,
		Logger:                  nop,
	})
	a.magic.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

// Manage starts obtaining (then renewing) certificates for the names not
// managed yet; it returns at once. A name the CA refuses, or a CA that
// cannot be reached, is retried with backoff in the background (each
// attempt logs one line) while the fallback certificate is served.
func (a *ACME) Manage(ctx context.Context, names []string) error {
	a.mu.Lock()
	var fresh []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == "" || a.managed[n] {
			continue
		}
		a.managed[n] = true
		fresh = append(fresh, n)
	}
	a.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	a.log.Info("acme: managing certificates", "names", fresh)
	return a.magic.ManageAsync(ctx, fresh)
}

// Managed lists the names being managed.
func (a *ACME) Managed() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.managed))
	for n := range a.managed {
		out = append(out, n)
	}
	return out
}

// HTTPChallengeHandler answers HTTP-01 validation requests
// (/.well-known/acme-challenge/, RFC 8555 8.3) and passes the rest to next.
func (a *ACME) HTTPChallengeHandler(next http.Handler) http.Handler {
	return a.issuer.HTTPChallengeHandler(next)
}

// Stop ends renewal.
func (a *ACME) Stop() { a.cache.Stop() }

func (a *ACME) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := a.magic.GetCertificate(hello)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCertificate, err)
	}
	return c, nil
}

// event turns certmagic's events into one log line each.
func (a *ACME) event(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		a.log.Info("acme: certificate obtained", "name", data["identifier"], "renewal", data["renewal"], "issuer", data["issuer"])
	case "cert_failed":
		a.log.Error("acme: obtaining certificate failed; serving the previous or self-signed certificate and retrying with backoff",
			"name", data["identifier"], "renewal", data["renewal"], "err", data["error"])
	}
	return nil
}

// NameStatus is one managed name as `agua status` shows it.
type NameStatus struct {
	Name     string    `json:"name"`
	Issuer   string    `json:"issuer,omitempty"` // empty: no certificate yet (the fallback is served)
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// Status lists the managed names, each with the certificate served now.
func (a *ACME) Status() []NameStatus {
	names := a.Managed()
	slices.Sort(names)
	out := make([]NameStatus, 0, len(names))
	for _, n := range names {
		st := NameStatus{Name: n}
		for _, c := range a.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(st.NotAfter) {
				st.Issuer, st.Serial, st.NotAfter = c.Leaf.Issuer.CommonName, c.Leaf.SerialNumber.Text(16), c.Leaf.NotAfter
			}
		}
		out = append(out, st)
	}
	return out
}
