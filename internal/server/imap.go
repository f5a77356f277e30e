package server

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/agua-mail/agua/internal/imapd"
	"github.com/agua-mail/agua/shield"
)

// listenIMAP binds the IMAP (STARTTLS) and IMAPS (implicit TLS) listeners
// behind the shield. The TLS handshake of IMAPS runs in each session's
// goroutine, never in Accept.
func (s *Server) listenIMAP(tlsCfg *tls.Config) error {
	c := s.cfg.IMAP
	auth := imapd.NewAuthenticator(s.dir)
	store := s.mail.read
	hooks := imapd.Hooks{
		AccountDelay: s.shield.AccountDelayFrom,
		Auth:         func(ok bool) { s.metrics.Auth("imap", ok) },
	}
	for _, group := range []struct {
		implicit bool
		addrs    []string
	}{
		{false, c.Listen},
		{true, c.TLSListen},
	} {
		if len(group.addrs) == 0 {
			continue
		}
		srv, err := imapd.NewServer(imapd.Config{
			Hostname:                  s.cfg.Hostname,
			TLS:                       tlsCfg,
			ImplicitTLS:               group.implicit,
			PreAuthTimeout:            c.PreAuthTimeout,
			IdleTimeout:               c.IdleTimeout,
			SessionTimeout:            c.SessionTimeout,
			MaxErrors:                 c.MaxErrors,
			MaxMessageSize:            int64(c.MaxMessageSize),
			AuthFailureDelay:          c.AuthDelay,
			AllowInsecureAuthLoopback: c.AllowInsecureAuth,
		}, auth, store, hooks, s.log)
		if err != nil {
			return err
		}
		s.imap = append(s.imap, srv)
		if err := s.bind(srv.Name(), group.addrs, c.MaxConns, imapReject, group.implicit, srv); err != nil {
			return err
		}
	}
	return nil
}

// imapReject answers a refused connection instead of the greeting
// (RFC 3501 7.1.5: BYE, then close), with the shield's reason as it is:
// it is complete client text.
func imapReject(c net.Conn, d shield.Decision) {
	if d.Temporary {
		fmt.Fprintf(c, "* BYE [UNAVAILABLE] %s\r\n", d.Reason)
		return
	}
	fmt.Fprintf(c, "* BYE %s\r\n", d.Reason)
}
