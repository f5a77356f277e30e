package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/agua-mail/agua/internal/certs"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/tlsutil"
	"github.com/agua-mail/agua/shield"
)

// acmeDomainPoll is how often the local domains are listed for names
// that need a certificate (a domain added with `agua domain add` gets its
// autoconfig/mta-sts certificates within this time).
var acmeDomainPoll = 30 * time.Second

// acmeRenewCheck overrides certmagic's renewal check interval (tests).
var acmeRenewCheck time.Duration

// openCerts loads the fallback certificate (the operator's files or the
// self-signed pair) and, with [tls] acme, prepares ACME and binds its
// challenge listener, so that a port held by another program stops the
// start with a clear error.
func (s *Server) openCerts() error {
	cfg, log := s.cfg, s.log
	var fallback *tls.Config
	var err error
	if cfg.TLS.CertFile != "" {
		// The operator's certificate: never replaced by a generated one.
		if fallback, err = tlsutil.Load(cfg.Resolve(cfg.TLS.CertFile), cfg.Resolve(cfg.TLS.KeyFile)); err != nil {
			return err
		}
	} else {
		certFile, keyFile := filepath.Join(cfg.DataDir, "tls", "cert.pem"), filepath.Join(cfg.DataDir, "tls", "key.pem")
		var created bool
		if fallback, created, err = tlsutil.LoadOrCreate(certFile, keyFile, []string{cfg.Hostname}); err != nil {
			return err
		}
		if created {
			log.Info("generated a self-signed TLS certificate", "cert", certFile)
		}
	}
	if !cfg.TLS.ACME {
		s.certs = certs.NewSource(fallback.Certificates[0], nil)
		return nil
	}
	o := certs.ACMEOptions{
		Directory: cfg.TLS.ACMEDirectory, Email: cfg.TLS.ACMEEmail, Challenge: cfg.TLS.ACMEChallenge,
		Listen: cfg.TLS.ACMEChallengeAddr(), Storage: ACMEDir(cfg), Hostname: cfg.Hostname,
		Logger: log, RenewCheck: acmeRenewCheck,
	}
	if cfg.TLS.ACMECARoot != "" {
		if o.CARoots, err = config.LoadCARoots(cfg.Resolve(cfg.TLS.ACMECARoot)); err != nil {
			return fmt.Errorf("tls.acme_ca_root: %w", err)
		}
	}
	if s.acme, err = certs.NewACME(o); err != nil {
		return err
	}
	s.certs = certs.NewSource(fallback.Certificates[0], s.acme)
	if cfg.Autoconfig.Listen == o.Listen {
		return nil // the autoconfig listener answers the challenge
	}
	return s.listenChallenge(o.Listen)
}

// ACMEDir is where ACME certificates and the account key are kept.
func ACMEDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "acme") }

// listenChallenge binds the listener on which the CA validates: TLS with
// ALPN acme-tls/1 for TLS-ALPN-01 (RFC 8737), plain HTTP for HTTP-01
// (RFC 8555 8.3). It serves nothing else.
func (s *Server) listenChallenge(addr string) error {
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("acme challenge listener (tls.acme_challenge_listen): %w; another program holds the port, or agua may not bind it (see the README on privileged ports)", err)
	}
	alpn := s.cfg.TLS.ACMEChallenge == "tls-alpn-01"
	var reject func(net.Conn, shield.Decision)
	if !alpn {
		reject = httpReject // a TLS client expects a handshake: a refusal just closes
	}
	var ln net.Listener = s.shield.Listener(tcp, shield.ListenerConfig{Name: "acme", MaxConns: 200, Reject: reject})
	var h http.Handler = http.NotFoundHandler()
	if alpn {
		ln = tls.NewListener(ln, s.certs.HTTPSConfig())
	} else {
		h = s.acme.HTTPChallengeHandler(h)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
	s.listeners = append(s.listeners, boundListener{name: "acme", ln: ln, srv: httpService{srv}})
	return nil
}

// manageCerts asks for certificates for the hostname and, when the
// autoconfig listener is on, the autoconfig., autodiscover. and mta-sts.
// names of every local domain, then looks for new domains every
// acmeDomainPoll until ctx ends.
func (s *Server) manageCerts(ctx context.Context) {
	if s.acme == nil {
		return
	}
	t := time.NewTicker(acmeDomainPoll)
	defer t.Stop()
	for {
		names := []string{s.cfg.Hostname}
		if s.cfg.Autoconfig.Listen != "" {
			domains, err := s.dir.ListDomains(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("acme: listing domains failed", "err", err)
			}
			for _, d := range domains {
				names = append(names, "autoconfig."+d, "autodiscover."+d, "mta-sts."+d)
			}
		}
		if err := s.acme.Manage(ctx, names); err != nil && ctx.Err() == nil {
			s.log.Error("acme: managing certificates failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
