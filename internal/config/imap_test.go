package config

import (
	"slices"
	"testing"
)

// Every bad [imap] value is reported, each under its own key.
func TestValidateIMAP(t *testing.T) {
	c := Default()
	c.IMAP.Listen = []string{"nope"}
	c.IMAP.TLSListen = []string{"127.0.0.1"}
	c.IMAP.PreAuthTimeout = 0
	c.IMAP.IdleTimeout = -1
	c.IMAP.SessionTimeout = 0
	c.IMAP.MaxErrors = 0
	c.IMAP.MaxMessageSize = 1 << 33
	c.IMAP.AuthDelay = -1
	c.IMAP.MaxConns = 0
	var keys []string
	for _, p := range c.Validate() {
		keys = append(keys, p.Key)
	}
	for _, want := range []string{"imap.listen", "imap.tls_listen", "imap.preauth_timeout", "imap.idle_timeout",
		"imap.session_timeout", "imap.max_errors", "imap.max_message_size", "imap.auth_failure_delay", "imap.max_connections"} {
		if !slices.Contains(keys, want) {
			t.Errorf("no problem reported for %s (got %v)", want, keys)
		}
	}
	if ps := Default().Validate(); len(ps) != 0 {
		t.Fatalf("defaults invalid: %v", ps)
	}
}
