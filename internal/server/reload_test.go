package server

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/config"
)

// reloadConfigText is a config file for TestShieldReloadLive; extra is
// appended (a [shield] section).
func reloadConfigText(dataDir, extra string) string {
	return fmt.Sprintf(`data_dir = %q

[smtp]
listen = ["127.0.0.1:0"]
submission_listen = []
submissions_listen = []

[pop3]
listen = []
tls_listen = []

[imap]
listen = []
tls_listen = []

[admin]
listen = ""
%s`, dataDir, extra)
}

// startFromFile runs agua from a config file, as `agua serve -config FILE`.
func startFromFile(t *testing.T, path string) (*Server, *logBuffer, func()) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetConfigFile(path)
	stop := serveInBackground(t, srv, logs)
	return srv, logs, stop
}

// protocolErrorsToBan sends protocol errors from src until the server
// refuses one, and returns how many it took (0: never, within max).
func protocolErrorsToBan(t *testing.T, addr, src string, max int) int {
	t.Helper()
	c := dialFrom(t, addr, src)
	c.expect("220 ")
	for i := 1; i <= max; i++ {
		c.send("BOGUS")
		lines, err := c.reply()
		if err != nil {
			t.Fatalf("protocol error %d from %s: %v", i, src, err)
		}
		line := lines[0]
		if strings.HasPrefix(line, "421") || strings.HasPrefix(line, "554") {
			return i
		}
		if !strings.HasPrefix(line, "500") {
			t.Fatalf("protocol error %d from %s: %q", i, src, line)
		}
	}
	return 0
}

// TestShieldReloadLive: a [shield] threshold edited in the config file
// applies without a restart, through the file watch, SIGHUP and agua
// reload; a bad edit is refused line by line and the old settings stay;
// lockdown survives a restart.
func TestShieldReloadLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agua.toml")
	dataDir := filepath.Join(dir, "data")
	write := func(extra string) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(reloadConfigText(dataDir, extra)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as editors save
			t.Fatal(err)
		}
	}
	write("")
	srv, logs, stop := startFromFile(t, path)
	smtp := srv.Addr("smtp")

	// The default protocol_error threshold is 10.
	if n := protocolErrorsToBan(t, smtp, "127.0.31.1", 3); n != 0 {
		t.Fatalf("banned after %d protocol errors under the default threshold", n)
	}

	// Edit: 3 protocol errors ban. The file watch applies it.
	write("\n[shield.thresholds.protocol_error]\ncount = 3\n")
	waitFor(t, "config reloaded by the file watch", func() bool { return strings.Contains(logs.String(), "config reloaded") })
	if n := protocolErrorsToBan(t, smtp, "127.0.31.2", 5); n != 3 {
		t.Fatalf("after the edit, banned at protocol error %d, want 3", n)
	}

	// SIGHUP applies an edit too (the watch may beat it: both apply).
	write("\n[shield.thresholds.protocol_error]\ncount = 2\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "a reload on SIGHUP", func() bool { return strings.Contains(logs.String(), `cause=SIGHUP`) })
	if n := protocolErrorsToBan(t, smtp, "127.0.31.4", 5); n != 2 {
		t.Fatalf("after SIGHUP, banned at protocol error %d, want 2", n)
	}

	// A bad edit: agua reload refuses it and names each line; the old
	// threshold stays.
	bad := "\n[shield.limits]\nper_ip_conns = 0\n\n[shield.thresholds.protocol_error]\ncount = 0\n"
	write(bad)
	text := reloadConfigText(dataDir, bad)
	lineOf := func(s string) int { return strings.Count(text[:strings.Index(text, s)], "\n") + 1 }
	c := admin.NewClient(AdminSocket(srv.cfg))
	var out admin.ReloadResult
	err := c.Do("POST", "/v1/reload", nil, &out)
	if err == nil {
		t.Fatal("bad edit accepted by agua reload")
	}
	msg := err.Error()
	for _, want := range []string{
		fmt.Sprintf("%s:%d: shield.limits.per_ip_conns: must be > 0", path, lineOf("per_ip_conns = 0")),
		fmt.Sprintf("%s:%d: shield.thresholds.protocol_error.count: must be > 0", path, lineOf("count = 0")),
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("agua reload's error lacks %q:\n%s", want, msg)
		}
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if n := protocolErrorsToBan(t, smtp, "127.0.31.5", 5); n != 2 {
		t.Fatalf("after a refused edit, banned at protocol error %d, want the old 2", n)
	}

	// Lockdown set at run time survives a restart.
	write("")
	srv.Shield().SetLockdown(true)
	stop()
	srv2, _, _ := startFromFile(t, path)
	if !srv2.Shield().Lockdown() {
		t.Fatal("lockdown lost by a restart")
	}
	expectDropped(t, srv2.Addr("smtp"), "127.0.31.6") // lockdown drops strangers
}
