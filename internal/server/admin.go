package server

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/shield"
)

// AdminTokenFile is where the generated admin token is kept.
func AdminTokenFile(dataDir string) string { return filepath.Join(dataDir, "admin.token") }

// adminToken returns the configured token, or the one generated on first
// start into <data_dir>/admin.token (mode 0600).
func (s *Server) adminToken() (string, error) {
	if s.cfg.Admin.Token != "" {
		return s.cfg.Admin.Token, nil
	}
	path := AdminTokenFile(s.cfg.DataDir)
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	var b [24]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	s.log.Info("generated the admin token for the dashboard and HTTP API", "file", path)
	return tok, nil
}

// ErrAlreadyRunning: another agua serves the same data folder.
var ErrAlreadyRunning = errors.New("another agua is already running with this data folder")

// checkNotRunning fails with ErrAlreadyRunning when the data folder's admin
// socket answers. Serve checks it before opening anything, so that the
// operator reads this rather than the first store that finds its lock taken.
func checkNotRunning(cfg config.Config) error {
	path := AdminSocket(cfg)
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil
	}
	c.Close()
	return fmt.Errorf("%w, %s (its admin socket %s answers; `agua status -data %s` shows it): stop it first, or give this one its own data_dir and ports",
		ErrAlreadyRunning, cfg.DataDir, path, cfg.DataDir)
}

// listenAdmin binds the admin unix socket (the CLI's way in) and, when
// configured, the HTTP admin listener behind the shield.
func (s *Server) listenAdmin(tlsCfg *tls.Config) error {
	path := AdminSocket(s.cfg)
	// A socket left by a killed server is removed; a live one means another
	// agua is using this data folder (checked at the start too).
	if err := checkNotRunning(s.cfg); err != nil {
		return err
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	os.Chmod(path, 0o600)
	s.adminLn = ln
	api := &admin.Server{Shield: s.shield, Status: s.status, Log: s.log,
		Queue: s.out.adminHandler(), Suspensions: s.suspensionsHandler(), Reload: s.out.signer.Reload, ReloadShield: s.ReloadConfig, RestartPending: s.RestartPending,
		WidestBlock4: s.cfg.Admin.WidestBlock4, WidestBlock6: s.cfg.Admin.WidestBlock6}
	api.DNSBL = s.dnsblWhy
	s.admin = &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}

	if s.cfg.Admin.Listen == "" {
		return nil
	}
	token, err := s.adminToken()
	if err != nil {
		return err
	}
	tcp, err := s.listenTCP("admin", s.cfg.Admin.Listen)
	if err != nil {
		return err
	}
	var wrapped net.Listener = s.shield.Listener(tcp, shield.ListenerConfig{Name: "admin", MaxConns: 200, Reject: httpReject})
	if s.cfg.Admin.TLS {
		wrapped = tls.NewListener(wrapped, tlsCfg)
	}
	s.webLn = wrapped
	s.web = &http.Server{
		Handler:           s.shield.Middleware("admin", api.HTTPHandler(token, s.metrics.Handler())),
		ConnContext:       shield.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          nil,
	}
	return nil
}

// httpReject answers a refused HTTP connection (429 when temporary).
func httpReject(c net.Conn, d shield.Decision) {
	code, text := 403, "Forbidden"
	if d.Temporary {
		code, text = 429, "Too Many Requests"
	}
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\n", code, text, len(d.Reason)+1, d.Reason)
}

// sessionCounts reports running protocol sessions by listener name.
func (s *Server) sessionCounts() map[string]int64 {
	return s.perServer(func(srv any) (int64, bool) {
		c, ok := srv.(interface{ Sessions() int64 })
		if !ok {
			return 0, false
		}
		return c.Sessions(), true
	})
}

// abandonedLogins reports, by listener name, the logins whose client left
// while the password check waited (connsrv.Frame.WhileVerifying).
func (s *Server) abandonedLogins() map[string]int64 {
	return s.perServer(func(srv any) (int64, bool) {
		c, ok := srv.(interface{ Abandoned() uint64 })
		if !ok {
			return 0, false
		}
		return int64(c.Abandoned()), true
	})
}

// perServer is figure of each protocol server, by the name of its first
// listener (a server serving several listeners counts once).
func (s *Server) perServer(figure func(srv any) (int64, bool)) map[string]int64 {
	out := map[string]int64{}
	seen := map[any]bool{}
	for _, l := range s.listeners {
		if seen[l.srv] {
			continue
		}
		seen[l.srv] = true
		if n, ok := figure(l.srv); ok {
			out[l.name] += n
		}
	}
	return out
}
