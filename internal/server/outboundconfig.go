package server

import (
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/outbound"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver"
)

// QueueDir is the outbound queue's folder in the data folder.
func QueueDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "queue") }

// QueueOptions maps the configuration to the file queue's options; the
// queue syncs the way the mail store does (store.sync).
func QueueOptions(cfg config.Config) queue.Options {
	return queue.Options{FsyncEach: cfg.Store.Sync == "fsync"}
}

// ResolverConfig maps [dns] to the resolver's configuration.
func ResolverConfig(cfg config.Config) resolver.Config {
	d := cfg.DNS
	rc := resolver.Config{
		Servers: d.Resolver, Timeout: d.Timeout, Attempts: d.Attempts,
		CacheSize: d.CacheSize, MaxTTL: d.MaxTTL, MaxNegativeTTL: d.MaxNegativeTTL,
	}
	if d.CacheSize == 0 {
		rc.CacheSize = -1 // the resolver's "no cache"
	}
	return rc
}

// OutboundOptions maps [outbound] to the delivery engine's options. The
// caller adds Queue, Resolver, Bounce (where DSNs go: local delivery, or
// the queue for a remote sender) and Logger.
func OutboundOptions(cfg config.Config) (outbound.Options, error) {
	o := cfg.Outbound
	opts := outbound.Options{
		Hostname:           cfg.Hostname,
		Port:               o.SMTPPort,
		RelayHost:          o.RelayHost,
		RelayUser:          o.RelayUser,
		RelayPassword:      o.RelayPassword,
		RelayRequireTLS:    o.RelayHost != "" && o.RelayRequireTLS,
		DisableDANE:        !o.DANE,
		InitialConcurrency: o.InitialConcurrency,
		MaxConcurrency:     o.MaxConcurrency,
		MaxPerConnection:   o.MessagesPerConn,
		RetryMin:           o.RetryMin,
		RetryMax:           o.RetryMax,
		Lifetime:           o.QueueLifetime,
		DelayNotice:        o.DelayNotice,
		Timeouts: outbound.Timeouts{
			Connect: o.Timeouts.Connect, Greeting: o.Timeouts.Greeting, Command: o.Timeouts.Command,
			Mail: o.Timeouts.Mail, Rcpt: o.Timeouts.Rcpt, DataInit: o.Timeouts.DataInit,
			DataBlock: o.Timeouts.DataBlock, DataEnd: o.Timeouts.DataEnd,
		},
	}
	rates, err := config.ParseRateLimits(o.RateLimits)
	if err != nil {
		return opts, fmt.Errorf("outbound.rate_limits: %w", err)
	}
	opts.Rate = outbound.RateLimits{Default: o.RatePerMinute, PerDest: rates}
	if o.SourceIP != "" {
		a, err := netip.ParseAddr(o.SourceIP)
		if err != nil {
			return opts, fmt.Errorf("outbound.source_ip: %w", err)
		}
		opts.SourceIP = a
	}
	return opts, nil
}
