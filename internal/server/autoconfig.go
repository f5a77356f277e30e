package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/agua-mail/agua/internal/autoconfig"
	"github.com/agua-mail/agua/internal/dnsrecords"
	"github.com/agua-mail/agua/shield"
)

// listenAutoconfig binds the [autoconfig] HTTP listener, when configured:
// client autoconfiguration and MTA-STS policies behind the shield, like
// the HTTP admin listener.
func (s *Server) listenAutoconfig() error {
	ac := s.cfg.Autoconfig
	if ac.Listen == "" {
		return nil
	}
	tcp, err := s.listenTCP("autoconfig", ac.Listen)
	if err != nil {
		return err
	}
	var ln net.Listener = s.shield.Listener(tcp, shield.ListenerConfig{Name: "autoconfig", MaxConns: 200, Reject: httpReject})
	if ac.TLS {
		ln = tls.NewListener(ln, s.certs.HTTPSConfig())
	}
	var h http.Handler = &autoconfig.Handler{
		Services: s.services(),
		Domains:  s.dir.ListDomains,
		MTASTS:   dnsrecords.PolicyParams{Mode: ac.MTASTSMode, MaxAge: ac.MTASTSMaxAge},
		Log:      s.log,
	}
	if s.acme != nil && s.cfg.TLS.ACMEChallenge == "http-01" && ac.Listen == s.cfg.TLS.ACMEChallengeAddr() {
		h = s.acme.HTTPChallengeHandler(h) // RFC 8555 8.3 on this listener
	}
	srv := &http.Server{
		Handler:           s.shield.Middleware("autoconfig", h),
		ConnContext:       shield.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	s.listeners = append(s.listeners, boundListener{name: "autoconfig", ln: ln, srv: httpService{srv}})
	return nil
}

// services are the client services as announced: the ports actually bound
// (the same as the config's unless it asked for port 0).
func (s *Server) services() dnsrecords.Services {
	svc := dnsrecords.FromConfig(s.cfg)
	for _, l := range []struct {
		name string
		svc  *dnsrecords.Service
	}{
		{"submission", &svc.Submission}, {"submissions", &svc.Submissions},
		{"imap", &svc.IMAP}, {"imaps", &svc.IMAPS}, {"pop3", &svc.POP3}, {"pop3s", &svc.POP3S},
	} {
		if _, port, err := net.SplitHostPort(s.Addr(l.name)); err == nil {
			l.svc.Port, _ = strconv.Atoi(port)
		}
	}
	return svc
}

// httpService runs an http.Server as one of the server's listeners: when
// shutdown closes the listener, the requests in flight finish (within the
// shutdown grace time) and Serve returns.
type httpService struct{ srv *http.Server }

func (h httpService) Serve(ln net.Listener) error {
	err := h.srv.Serve(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.srv.Shutdown(ctx)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
