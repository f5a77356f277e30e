package smtpd

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/agua-mail/agua/internal/smtptest"
	"github.com/agua-mail/agua/internal/tlsutil"
)

// testServers is one smtpd per mode on loopback, all on one memBackend.
type testServers struct {
	backend *memBackend
	addrs   map[string]string // listener name → address
	servers []*Server
}

// startServers starts an MX and a submission listener with STARTTLS, a
// self-signed certificate and AUTH allowed in the clear on loopback (as the
// default config does). mutate may change the config first.
func startServers(t *testing.T, backend *memBackend, mutate func(*Config)) *testServers {
	t.Helper()
	return startServersHooks(t, backend, mutate, Hooks{})
}

// startServersHooks is startServers with hooks.
func startServersHooks(t *testing.T, backend *memBackend, mutate func(*Config), hooks Hooks) *testServers {
	t.Helper()
	dir := t.TempDir()
	tlsCfg, _, err := tlsutil.LoadOrCreate(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Hostname: "mx.example.test", TLS: tlsCfg, AllowInsecureAuthLoopback: true, SpoolDir: dir}
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ts := &testServers{backend: backend, addrs: map[string]string{}}
	for _, mode := range []Mode{ModeMX, ModeSubmission} {
		srv, err := NewServer(mode, cfg, backend, hooks, log)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { ln.Close(); srv.Shutdown(t.Context()) })
		ts.addrs[mode.String()] = ln.Addr().String()
		ts.servers = append(ts.servers, srv)
	}
	return ts
}

func (ts *testServers) addr(t *testing.T, listener string) string {
	a, ok := ts.addrs[listener]
	if !ok {
		t.Fatalf("no listener %q", listener)
	}
	return a
}

// TestDialogs replays the protocol dialogs in testdata/dialogs against an
// in-memory backend: the mailboxes alice and bob at example.test, the
// account alice@example.test with the password "correct horse battery".
// Format: see smtptest.RunDir. Dialogs that need the real mail rules live
// in internal/server/testdata/dialogs.
func TestDialogs(t *testing.T) {
	ts := startServers(t, &memBackend{users: map[string]bool{"alice": true, "bob": true}}, nil)
	smtptest.RunDir(t, "testdata/dialogs", ts.addr)
}
