package server

import (
	"net/netip"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
)

// Bans, manual and behavioural, survive a restart of the whole server on
// the same data folder, and keep refusing their addresses.
func TestBansSurviveRestart(t *testing.T) {
	cfg := testConfig(t)
	cfg.Shield.Thresholds.SetCount("protocol_error", 2)
	srv, stop := runServer(t, cfg)
	if err := srv.Shield().Ban(netip.MustParsePrefix("127.0.0.120/32"), time.Hour, "manual-test", shield.Reject); err != nil {
		t.Fatal(err)
	}
	c := dialFrom(t, srv.Addr("smtp"), "127.0.0.121")
	c.expect("220 ")
	c.cmd("BOGUS1", "500")
	c.send("BOGUS2")
	c.expect("421 4.7.0") // second protocol error: banned
	stop()

	srv2, _ := runServer(t, cfg)
	got := map[string]string{}
	for _, b := range srv2.Shield().Bans() {
		got[b.Prefix.String()] = b.Reason
	}
	if got["127.0.0.120/32"] != "manual-test" || got["127.0.0.121/32"] != "protocol_error" {
		t.Fatalf("bans after restart: %v", got)
	}
	for _, src := range []string{"127.0.0.120", "127.0.0.121"} {
		dialFrom(t, srv2.Addr("smtp"), src).expect("554 5.7.1")
	}
	dialFrom(t, srv2.Addr("smtp"), "127.0.0.122").expect("220 ")
}
