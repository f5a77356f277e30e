package server

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// A second agua on another data folder but the same ports must not start:
// with SO_REUSEPORT the kernel would let it bind them and hand it part of
// the connections.
func TestSecondServerOnSamePortsRefused(t *testing.T) {
	first := startServer(t, nil)
	for _, name := range []string{"smtp", "imap", "admin"} {
		addr := first.srv.Addr(name)
		cfg := serverConfig(t, func(c *config.Config) {
			switch name {
			case "smtp":
				c.SMTP.Listen = []string{addr}
			case "imap":
				c.IMAP.Listen = []string{addr}
			case "admin":
				c.Admin.Listen = addr
			}
		})
		srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
		if err == nil {
			srv.Close()
			t.Fatalf("%s: a second server bound %s, which the first one holds", name, addr)
		}
		if !errors.Is(err, ErrAddressInUse) || !strings.Contains(err.Error(), addr) {
			t.Errorf("%s: error %q, want ErrAddressInUse naming %s", name, err, addr)
		}
	}
}

// A second agua on the same data folder is told that one runs there, before
// any store reports its lock taken.
func TestSecondServerOnSameDataFolderRefused(t *testing.T) {
	first := startServer(t, nil)
	cfg := serverConfig(t, func(c *config.Config) { c.DataDir = first.cfg.DataDir })
	srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	if err == nil {
		srv.Close()
		t.Fatal("a second server started on the first one's data folder")
	}
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "agua status -data") {
		t.Errorf("error %q, want ErrAlreadyRunning with a hint", err)
	}
}
