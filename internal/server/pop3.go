package server

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/agua-mail/agua/internal/pop3d"
	"github.com/agua-mail/agua/shield"
)

// listenPOP3 binds the POP3 (STLS) and POP3S (implicit TLS) listeners
// behind the shield. The TLS handshake of POP3S runs in each session's
// goroutine, never in Accept.
func (s *Server) listenPOP3(tlsCfg *tls.Config) error {
	c := s.cfg.POP3
	backend := pop3d.NewBackend(s.dir, s.mail.read, s.log)
	hooks := pop3d.Hooks{
		AccountDelay: s.shield.AccountDelayFrom,
		Auth:         func(ss *pop3d.Session, ok bool) { s.metrics.Auth(ss.Listener, ok) },
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
		srv, err := pop3d.NewServer(pop3d.Config{
			Hostname:                  s.cfg.Hostname,
			TLS:                       tlsCfg,
			ImplicitTLS:               group.implicit,
			PreAuthTimeout:            c.PreAuthTimeout,
			IdleTimeout:               c.IdleTimeout,
			SessionTimeout:            c.SessionTimeout,
			MaxLineLength:             c.MaxLineLength,
			MaxErrors:                 c.MaxErrors,
			AuthFailureDelay:          c.AuthDelay,
			AllowInsecureAuthLoopback: c.AllowInsecureAuth,
		}, backend, hooks, s.log)
		if err != nil {
			return err
		}
		s.pop3 = append(s.pop3, srv)
		if err := s.bind(srv.Name(), group.addrs, c.MaxConns, pop3Reject, group.implicit, srv); err != nil {
			return err
		}
	}
	return nil
}

// pop3Reject answers a refused connection instead of the greeting
// (RFC 2449 8, RFC 3206 4: [SYS/TEMP] for a temporary refusal), with the
// shield's reason as it is: it is complete client text.
func pop3Reject(c net.Conn, d shield.Decision) {
	if d.Temporary {
		fmt.Fprintf(c, "-ERR [SYS/TEMP] %s\r\n", d.Reason)
		return
	}
	fmt.Fprintf(c, "-ERR [AUTH] %s\r\n", d.Reason)
}
