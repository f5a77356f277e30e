package server

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/shield"
)

// TestReputationReloadLive: [shield.reputation] edited in the config file
// applies to the running server: an address whose protocol errors scored
// -3 is neutral under the default untrusted = -5 and untrusted once the
// file says -3; a bad edit is refused with its file and line and changes
// nothing.
func TestReputationReloadLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agua.toml")
	dataDir := filepath.Join(dir, "data")
	write := func(extra string) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(reloadConfigText(dataDir, extra)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	srv, logs, _ := startFromFile(t, path)
	if n := protocolErrorsToBan(t, srv.Addr("smtp"), "127.0.33.1", 3); n != 0 {
		t.Fatalf("banned after %d protocol errors", n)
	}
	addr := netip.MustParseAddr("127.0.33.1")
	r := srv.Shield().Reputation(addr)
	if r.Address.Score != -3 || r.Address.Parts["protocol_error"] != -3 || r.Standing != shield.Neutral {
		t.Fatalf("before the edit: %+v", r)
	}

	write("\n[shield.reputation]\nuntrusted = -3\n")
	waitFor(t, "config reloaded by the file watch", func() bool { return strings.Contains(logs.String(), "config reloaded") })
	if r := srv.Shield().Reputation(addr); r.Standing != shield.Untrusted || r.Untrusted != -3 {
		t.Fatalf("after the edit: %+v", r)
	}

	bad := "\n[shield.reputation]\nuntrusted = 2\n\n[shield.reputation.weights]\nno_such_input = -1\n"
	write(bad)
	text := reloadConfigText(dataDir, bad)
	lineOf := func(s string) int { return strings.Count(text[:strings.Index(text, s)], "\n") + 1 }
	var out admin.ReloadResult
	err := admin.NewClient(AdminSocket(srv.cfg)).Do("POST", "/v1/reload", nil, &out)
	if err == nil {
		t.Fatal("bad [shield.reputation] accepted")
	}
	for _, want := range []string{
		fmt.Sprintf("%s:%d: shield.reputation.untrusted: must be < 0", path, lineOf("untrusted = 2")),
		fmt.Sprintf("%s:%d: shield.reputation.weights.no_such_input: no such input", path, lineOf("no_such_input")),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reload error lacks %q:\n%v", want, err)
		}
	}
	if r := srv.Shield().Reputation(addr); r.Untrusted != -3 {
		t.Fatalf("a refused edit changed the threshold: %+v", r)
	}
}
