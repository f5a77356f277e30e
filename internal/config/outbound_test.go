package config

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestOutboundAndDNSParse(t *testing.T) {
	src := `[outbound]
smtp_port = 2525
source_ip = "192.0.2.10"
relay_host = "smtp.provider.example:587"
relay_user = "me@example.com"
relay_password = "secret"
retry_min = "1m"
delay_notice = "0s"
rate_limits = ["gmail.com=60"]

[outbound.timeouts]
greeting = "30s"

[dns]
resolver = ["127.0.0.53", "[::1]:5353"]
cache_size = 0
`
	c, err := Parse("out.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Outbound
	if o.SMTPPort != 2525 || o.SourceIP != "192.0.2.10" || o.RelayHost != "smtp.provider.example:587" || !o.RelayRequireTLS ||
		o.RetryMin != time.Minute || o.RetryMax != 4*time.Hour || o.Timeouts.Greeting != 30*time.Second || o.Timeouts.DataEnd != 10*time.Minute {
		t.Fatalf("outbound = %+v", o)
	}
	if o.DelayNotice != 0 || !o.MTASTS || o.RateLimits[0] != "gmail.com=60" || Default().Outbound.DelayNotice != 4*time.Hour {
		t.Fatalf("outbound = %+v", o)
	}
	if !slices.Equal(c.DNS.Resolver, []string{"127.0.0.53", "[::1]:5353"}) || c.DNS.CacheSize != 0 || c.DNS.Timeout != 5*time.Second {
		t.Fatalf("dns = %+v", c.DNS)
	}
}

func TestOutboundProblems(t *testing.T) {
	src := `[outbound]
smtp_port = 0
source_ip = "not-an-ip"
relay_user = "x"
initial_concurrency = 30
retry_min = "1h"
retry_max = "1m"
delay_notice = "-1h"
rate_per_minute = -1
rate_limits = ["gmail.com:60"]
mta_sts_cache_size = 0

[outbound.timeouts]
data_end = "0s"

[dns]
resolver = ["dns.example.com"]
attempts = 0
`
	_, err := Parse("bad.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	var keys []string
	for _, p := range ce.Problems {
		keys = append(keys, p.Key)
		if p.Line == 0 {
			t.Errorf("problem without a line: %v", p)
		}
	}
	want := []string{"outbound.smtp_port", "outbound.source_ip", "outbound.relay_user", "outbound.initial_concurrency",
		"outbound.retry_max", "outbound.timeouts.data_end", "dns.resolver", "dns.attempts",
		"outbound.delay_notice", "outbound.rate_per_minute", "outbound.rate_limits", "outbound.mta_sts_cache_size"}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("problems %v, want keys %v", ce.Problems, want)
	}
}

func TestParseRateLimits(t *testing.T) {
	m, err := ParseRateLimits([]string{"Gmail.com=60", "mx.example.net.= 10"})
	if err != nil || m["gmail.com"] != 60 || m["mx.example.net"] != 10 {
		t.Fatalf("%v %v", m, err)
	}
	for _, bad := range []string{"gmail.com", "=5", "a.test=-1", "a.test=x", "u@a.test=5"} {
		if _, err := ParseRateLimits([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
