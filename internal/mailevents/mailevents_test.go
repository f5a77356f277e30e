package mailevents

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
)

// The mail behaviours keep the thresholds and config names they had when
// they were part of the shield.
func TestDefaultsUnderTheirConfigNames(t *testing.T) {
	th := shield.DefaultConfig().Thresholds
	want := map[string]shield.Threshold{
		"unknown_recipient": {Count: 20, Window: 10 * time.Minute},
		"pregreet":          {Count: 1, Window: time.Minute},
		"message":           {Count: 500, Window: time.Minute},
		"recipient":         {Count: 2000, Window: time.Minute},
		"network_message":   {Count: 3000, Window: time.Minute},
		"auth_failure":      {Count: 10, Window: 10 * time.Minute},
		"protocol_error":    {Count: 10, Window: 5 * time.Minute},
	}
	for name, w := range want {
		if th[name] != w {
			t.Errorf("thresholds.%s = %+v, want %+v", name, th[name], w)
		}
	}
}

// accept returns the server side of a connection from src through a shield
// listener, so reports go through shield.Report as in smtpd.
func accept(t *testing.T, ln net.Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	return sc
}

// newShield is a shield with low mail thresholds and a listener on it.
func newShield(t *testing.T, stateDir string) (*shield.Shield, net.Listener) {
	t.Helper()
	cfg := shield.DefaultConfig()
	cfg.Limits.PerIPRate, cfg.Limits.PerIPBurst = 1000, 1000
	cfg.Limits.PerPrefixRate, cfg.Limits.PerPrefixBurst = 1000, 1000
	for _, n := range []string{"unknown_recipient", "message", "recipient"} {
		cfg.Thresholds.SetCount(n, 3)
	}
	cfg.Thresholds.SetCount("network_message", 4)
	s, err := shield.New(cfg, shield.Options{StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.Listener(inner, shield.ListenerConfig{Name: "smtp"})
	t.Cleanup(func() { ln.Close() })
	return s, ln
}

// A network ban keeps its client-safe text across a restart (it used to
// come back as "access denied").
func TestNetworkBanTextSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, ln := newShield(t, dir)
	for i := range 2 {
		c := accept(t, ln, fmt.Sprintf("127.76.0.%d", i+1))
		shield.Report(c, MessageAccepted)
		shield.Report(c, MessageAccepted)
	}
	want := shield.Decision{Action: shield.Reject, Temporary: true, Reason: "too many messages from your network, slow down", Source: "ban:network_message"}
	if got := s.Decide(netipAddr("127.76.0.99"), ""); got != want {
		t.Fatalf("before restart: %+v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := newShield(t, dir)
	defer s2.Close()
	if got := s2.Decide(netipAddr("127.76.0.99"), ""); got != want {
		t.Fatalf("after restart: got %+v, want %+v", got, want)
	}
}

// Each mail behaviour bans at its threshold with its reason and kind of
// refusal; accepted messages also count per network.
func TestMailBans(t *testing.T) {
	s, ln := newShield(t, "")
	defer s.Close()

	tests := []struct {
		ev        shield.Event
		src       string
		count     int
		temporary bool
		reason    string
	}{
		{UnknownRecipient, "127.71.0.1", 3, false, "banned for too many unknown recipients"},
		{PreGreet, "127.72.0.1", 1, false, "banned for talking before the greeting"},
		{MessageAccepted, "127.73.0.1", 3, true, "too many messages, slow down"},
		{RecipientAccepted, "127.74.0.1", 3, true, "too many recipients, slow down"},
	}
	for _, tt := range tests {
		c := accept(t, ln, tt.src)
		var d shield.Decision
		for i := range tt.count {
			if d = shield.Report(c, tt.ev); d.Action != shield.Allow && i < tt.count-1 {
				t.Fatalf("%s: banned after %d", tt.ev, i+1)
			}
		}
		want := shield.Decision{Action: shield.Reject, Temporary: tt.temporary, Reason: tt.reason, Source: "ban:" + tt.ev.String()}
		if d != want {
			t.Errorf("%s: got %+v, want %+v", tt.ev, d, want)
		}
	}

	// A flood spread over a network: two messages from each of two
	// addresses reach network_message (4) before either reaches message (3).
	var d shield.Decision
	for i := range 2 {
		c := accept(t, ln, fmt.Sprintf("127.75.0.%d", i+1))
		shield.Report(c, MessageAccepted)
		d = shield.Report(c, MessageAccepted)
	}
	want := shield.Decision{Action: shield.Reject, Temporary: true, Reason: "too many messages from your network, slow down", Source: "ban:network_message"}
	if d != want {
		t.Fatalf("network flood: got %+v, want %+v", d, want)
	}
	if got := s.Decide(netipAddr("127.75.0.99"), ""); got != want {
		t.Fatalf("network ban not enforced: %+v", got)
	}
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
