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

// The SPF and DMARC results of the mail an address sent are parts of its
// reputation: a legitimate signed message adds spf_pass, dmarc_pass and
// the accepted message; a spoofed p=reject one, refused, dmarc_fail.
func TestReputationFromMailAuth(t *testing.T) {
	w := newAuthWorld(t)
	ts := w.start(t, nil)
	legit := authMsg("Alice <alice@bank.example>", "statement", "")
	sig, err := w.signer.Sign("alice@bank.example", []byte(legit))
	if err != nil || sig == nil {
		t.Fatalf("sign: %v", err)
	}
	if got := authSend(t, ts, "127.0.0.22", "mx.bank.example", "alice@bank.example", string(sig)+legit); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("legitimate message: %q", got)
	}
	r := ts.srv.Shield().Reputation(netip.MustParseAddr("127.0.0.22"))
	if p := r.Address.Parts; p["spf_pass"] != 0.5 || p["dmarc_pass"] != 1 || p["message"] != 1 || r.Address.Score != 2.5 {
		t.Fatalf("legitimate sender: %+v", r.Address)
	}
	if got := authSend(t, ts, "127.0.0.23", "evil.example", "x@evil.example", authMsg("Bank <security@bank.example>", "verify", "")); !strings.HasPrefix(got, "550 5.7.1") {
		t.Fatalf("spoof: %q", got)
	}
	r = ts.srv.Shield().Reputation(netip.MustParseAddr("127.0.0.23"))
	if p := r.Address.Parts; p["dmarc_fail"] != -3 || p["message"] != 0 || p["dmarc_pass"] != 0 {
		t.Fatalf("spoofer: %+v", r.Address)
	}
}

// The [dnsbl] score is the "dnsbl" part of the address's reputation (and
// moves its network's): a listing lowers it, an allowlisting raises it
// enough to make the client trusted. agua why shows it.
func TestReputationFromDNSBL(t *testing.T) {
	ts, d := dnsblServer(t, nil)
	d.Add(t,
		"5.6.0.127.bl.test. 300 IN A 127.0.0.2",  // weight 2, below the threshold: served
		"8.6.0.127.wl.test. 300 IN A 127.0.10.3", // weight -5
	)
	for _, src := range []string{"127.0.6.5", "127.0.6.8"} {
		got, c := greeting(t, ts, src) // the greeting waits for the lookups
		if !strings.HasPrefix(got, "220 ") {
			t.Fatalf("%s: %q", src, got)
		}
		c.cmd("QUIT", "221")
	}
	why := func(ip string) admin.WhyResult {
		t.Helper()
		var x admin.WhyResult
		if err := admin.NewClient(AdminSocket(ts.cfg)).Do("GET", "/v1/why?ip="+ip, nil, &x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	if r := why("127.0.6.5").Reputation; r.Address.Parts["dnsbl"] != -2 || r.Standing != shield.Neutral {
		t.Fatalf("listed by bl.test: %+v", r)
	}
	r := why("127.0.6.8").Reputation
	if r.Address.Parts["dnsbl"] != 5 || r.Standing != shield.Trusted || r.Network.Parts["dnsbl"] != 3 {
		t.Fatalf("allowlisted by wl.test: %+v", r)
	}
}
