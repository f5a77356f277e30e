package server

import (
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
)

func TestOutboundOptionsFromConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Hostname = "mail.example.com"
	cfg.Outbound.SMTPPort = 2525
	cfg.Outbound.SourceIP = "192.0.2.7"
	cfg.Outbound.RetryMin = time.Minute
	cfg.Outbound.Timeouts.DataEnd = time.Second
	o, err := OutboundOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o.Hostname != "mail.example.com" || o.Port != 2525 || o.SourceIP.String() != "192.0.2.7" || o.RetryMin != time.Minute ||
		o.Timeouts.DataEnd != time.Second || o.Timeouts.Greeting != 5*time.Minute || o.RelayRequireTLS || o.Lifetime != 120*time.Hour {
		t.Fatalf("options %+v", o)
	}
	cfg.Outbound.RelayHost = "smart.example.com:587"
	if o, _ := OutboundOptions(cfg); !o.RelayRequireTLS || o.RelayHost != "smart.example.com:587" {
		t.Fatalf("relay options %+v", o)
	}
	if rc := ResolverConfig(cfg); rc.CacheSize != 10000 || rc.Attempts != 2 {
		t.Fatalf("resolver config %+v", rc)
	}
	cfg.DNS.CacheSize = 0
	if rc := ResolverConfig(cfg); rc.CacheSize >= 0 {
		t.Fatal("cache_size 0 must disable the cache")
	}
}
