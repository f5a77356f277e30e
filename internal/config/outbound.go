package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// OutboundConfig configures delivery of mail to other servers (the queue in
// <data_dir>/queue and internal/outbound).
type OutboundConfig struct {
	SMTPPort           int              `toml:"smtp_port" doc:"TCP port of the recipients' mail exchangers (25 everywhere on the Internet; labs and tests point it at loopback peers)."`
	SourceIP           string           `toml:"source_ip" doc:"Local address outgoing connections are made from (the one whose PTR record and SPF entry match hostname). Empty: the system's choice."`
	RelayHost          string           `toml:"relay_host" doc:"Smart host (HOST:PORT or HOST for port 25) that receives all outgoing mail instead of the recipients' MX hosts, like Postfix's relayhost. Empty: deliver directly."`
	RelayUser          string           `toml:"relay_user" doc:"User name for AUTH at the relay host (sent only over TLS, or to a loopback relay). Empty: no AUTH."`
	RelayPassword      string           `toml:"relay_password" doc:"Password for AUTH at the relay host."`
	RelayRequireTLS    bool             `toml:"relay_require_tls" doc:"Require STARTTLS with a certificate valid for the relay host's name; without it mail waits in the queue."`
	DANE               bool             `toml:"dane" doc:"Authenticate MX hosts with DANE (RFC 7672): when the MX, address and TLSA answers are DNSSEC-validated (AD bit from dns.resolver), TLS is required and the certificate must match a TLSA record, else mail waits. Needs a validating resolver to have any effect."`
	MTASTS             bool             `toml:"mta_sts" doc:"Honour recipient domains' MTA-STS policies (RFC 8461): the _mta-sts TXT record and the policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (certificate verified), cached in <data_dir>/mta-sts.json. In enforce mode mail goes only to the MX hosts the policy names, over TLS with a certificate valid for the MX name, else it waits in the queue; testing mode logs and delivers. DANE, where it applies, takes precedence. Not used for a relay host."`
	MTASTSCacheSize    int              `toml:"mta_sts_cache_size" doc:"Most MTA-STS policies kept (one per destination domain that publishes one); the one expiring first makes room."`
	InitialConcurrency int              `toml:"initial_concurrency" doc:"Connections per destination at first; one more after as many successes, one less on a 421/451 or failed connection (Postfix's initial_destination_concurrency)."`
	MaxConcurrency     int              `toml:"max_concurrency" doc:"Most connections per destination."`
	RatePerMinute      int              `toml:"rate_per_minute" doc:"Most messages per minute to any one destination domain, evenly spaced (one every minute/N). 0: unlimited."`
	RateLimits         []string         `toml:"rate_limits" doc:"Rates for named destinations, each \"NAME=N\": N messages per minute to the destination domain NAME, or to the MX host NAME whatever domain it serves (0: unlimited). Overrides rate_per_minute for that name."`
	MessagesPerConn    int              `toml:"messages_per_connection" doc:"Most messages sent over one connection before it is closed."`
	RetryMin           time.Duration    `toml:"retry_min" doc:"Wait before the first retry of a temporary failure; it doubles with each attempt (with ±10% jitter)."`
	RetryMax           time.Duration    `toml:"retry_max" doc:"Longest wait between retries."`
	QueueLifetime      time.Duration    `toml:"queue_lifetime" doc:"A message not delivered after this long bounces (4.4.7) with a delivery status notification to its sender."`
	SRSMaxAge          time.Duration    `toml:"srs_max_age" doc:"How long a bounce to a forwarded message's rewritten sender (SRS0=...@domain, keyed by <data_dir>/srs.key) is accepted and sent back to the original sender; older or forged ones get 550 5.1.1. Whole days, 1 to 1000."`
	DelayNotice        time.Duration    `toml:"delay_notice" doc:"A message still not delivered this long after it was queued gets one delay notice (RFC 3464 DSN, Action: delayed) to its sender; never to the null sender. 0 (or a time not shorter than queue_lifetime): no delay notices."`
	Timeouts           OutboundTimeouts `toml:"timeouts" doc:"Peer timeouts of outgoing SMTP sessions (RFC 5321 4.5.3.2 minimums by default)."`
	Limits             SendLimits       `toml:"limits" doc:"Sending limits of authenticated submission and the trip switch that suspends a compromised account's sending (state in <data_dir>/sendlimit.json)."`
}

// SendLimits are the sending limits per account and per domain, and the
// signals that suspend an account's sending.
type SendLimits struct {
	MessagesPerHour       int           `toml:"messages_per_hour" doc:"Messages an account may submit per hour; over it: 451 4.7.1."`
	MessagesPerDay        int           `toml:"messages_per_day" doc:"Messages an account may submit per 24 hours; over it: 451 4.7.1."`
	RecipientsPerMessage  int           `toml:"recipients_per_message" doc:"Recipients of one submitted message; the excess RCPTs get 452 4.5.3 (RFC 5321 4.5.3.1.10) and the client sends them in another transaction."`
	NewRecipientsPerDay   int           `toml:"new_recipients_per_day" doc:"External recipients an account has never sent to before, per 24 hours (the record of past recipients survives restarts); over it: 451 4.7.1."`
	DomainMessagesPerHour int           `toml:"domain_messages_per_hour" doc:"Messages all accounts of one domain may submit per hour."`
	DomainMessagesPerDay  int           `toml:"domain_messages_per_day" doc:"Messages all accounts of one domain may submit per 24 hours."`
	BounceRatio           float64       `toml:"bounce_ratio" doc:"Share (0-1) of an account's recipients of the last 24 hours that bounced (permanent failures and expiries) over which its new messages get 451 4.7.1, once bounce_min_sample outcomes are known."`
	BounceMinSample       int           `toml:"bounce_min_sample" doc:"Final outcomes (delivered or bounced) needed before the bounce ratio counts."`
	SuspendAfterHits      int           `toml:"suspend_after_hits" doc:"Limit hits (at most one per transaction; recipients_per_message does not count) within suspend_window that suspend the account's sending."`
	SuspendWindow         time.Duration `toml:"suspend_window" doc:"The window of suspend_after_hits."`
	SuspendLoginNetworks  int           `toml:"suspend_login_networks" doc:"Distinct networks (/24, /48) logging in to one account on submission within an hour that suspend its sending."`
	SuspendBounceRatio    float64       `toml:"suspend_bounce_ratio" doc:"Bounce ratio (0-1) that suspends the account's sending."`
	KnownRecipients       int           `toml:"known_recipients" doc:"Past external recipients remembered per account (hashed), the oldest forgotten first."`
	MaxAccounts           int           `toml:"max_accounts" doc:"Accounts (and domains) whose sending is tracked; the least recently active is forgotten first (never a suspended one)."`
	NotifyPostmaster      bool          `toml:"notify_postmaster" doc:"Mail the postmaster when an account's sending is suspended automatically (besides the log line, the metric and the dashboard)."`
}

// OutboundTimeouts bound each step of an outgoing SMTP session.
type OutboundTimeouts struct {
	Connect   time.Duration `toml:"connect" doc:"TCP connection to a mail exchanger."`
	Greeting  time.Duration `toml:"greeting" doc:"Waiting for the 220 greeting (RFC 5321 4.5.3.2.1)."`
	Command   time.Duration `toml:"command" doc:"Reply to EHLO, STARTTLS, AUTH, RSET and QUIT."`
	Mail      time.Duration `toml:"mail" doc:"Reply to MAIL (4.5.3.2.2)."`
	Rcpt      time.Duration `toml:"rcpt" doc:"Reply to each RCPT (4.5.3.2.3)."`
	DataInit  time.Duration `toml:"data_init" doc:"The 354 reply to DATA (4.5.3.2.4)."`
	DataBlock time.Duration `toml:"data_block" doc:"Each block of message data sent (4.5.3.2.5)."`
	DataEnd   time.Duration `toml:"data_end" doc:"Reply to the final dot (4.5.3.2.6)."`
}

// DNSConfig configures the DNS resolver (MX lookups for delivery; sender
// checks later).
type DNSConfig struct {
	Resolver       []string      `toml:"resolver" doc:"Upstream resolvers (IP or IP:port), asked in order. Empty: the nameservers of /etc/resolv.conf. Use a local validating resolver if DANE is to trust its AD bit."`
	Timeout        time.Duration `toml:"timeout" doc:"Time allowed for one query to one resolver."`
	Attempts       int           `toml:"attempts" doc:"How many times the list of resolvers is tried."`
	CacheSize      int           `toml:"cache_size" doc:"Most answers cached (for their TTL; negative answers for the SOA's negative TTL, RFC 2308). 0 disables the cache."`
	MaxTTL         time.Duration `toml:"max_ttl" doc:"Longest time an answer is cached, whatever its TTL."`
	MaxNegativeTTL time.Duration `toml:"max_negative_ttl" doc:"Longest time a \"no such name\" or \"no such record\" answer is cached."`
	// The circuit breaker of the accept path (resolver.Breaker).
	BreakerFailures int           `toml:"breaker_failures" doc:"Circuit breaker of the lookups made while mail is accepted ([auth] SPF, DKIM, DMARC; [dnsbl]): after this many consecutive lookups got no answer at all (timeouts; SERVFAIL is an answer), lookups the cache cannot answer are not sent for breaker_cooldown and count as DNS timeouts at once: SPF, DKIM and DMARC results are temperror (Authentication-Results shows spf=temperror, dkim=temperror for each signature, dmarc=temperror), never a fail, so no message is refused for it (auth.temperror decides between accept and a 451); a [dnsbl] list counts as not listing. Then one lookup probes the resolvers, and an answer closes the circuit. Outbound delivery is not affected."`
	BreakerCooldown time.Duration `toml:"breaker_cooldown" doc:"How long the accept path's lookups are suspended once the circuit breaker opens (see breaker_failures)."`
}

func defaultOutbound() OutboundConfig {
	return OutboundConfig{
		SMTPPort:           25,
		RelayRequireTLS:    true,
		DANE:               true,
		MTASTS:             true,
		MTASTSCacheSize:    10000,
		InitialConcurrency: 5,
		MaxConcurrency:     20,
		MessagesPerConn:    100,
		RetryMin:           5 * time.Minute,
		RetryMax:           4 * time.Hour,
		QueueLifetime:      5 * 24 * time.Hour,
		DelayNotice:        4 * time.Hour,
		SRSMaxAge:          21 * 24 * time.Hour,
		Limits: SendLimits{
			MessagesPerHour: 200, MessagesPerDay: 1000, RecipientsPerMessage: 100, NewRecipientsPerDay: 200,
			DomainMessagesPerHour: 2000, DomainMessagesPerDay: 10000, BounceRatio: 0.3, BounceMinSample: 25,
			SuspendAfterHits: 5, SuspendWindow: time.Hour, SuspendLoginNetworks: 10, SuspendBounceRatio: 0.5,
			KnownRecipients: 1000, MaxAccounts: 10000,
		},
		Timeouts: OutboundTimeouts{
			Connect: 30 * time.Second, Greeting: 5 * time.Minute, Command: 5 * time.Minute,
			Mail: 5 * time.Minute, Rcpt: 5 * time.Minute, DataInit: 2 * time.Minute,
			DataBlock: 3 * time.Minute, DataEnd: 10 * time.Minute,
		},
	}
}

func defaultDNS() DNSConfig {
	return DNSConfig{Timeout: 5 * time.Second, Attempts: 2, CacheSize: 10000, MaxTTL: time.Hour, MaxNegativeTTL: 15 * time.Minute,
		BreakerFailures: 5, BreakerCooldown: 30 * time.Second}
}

// validateOutbound checks [outbound] and [dns].
func (c Config) validateOutbound() []Problem {
	var ps []Problem
	bad := func(key, msg string) { ps = append(ps, Problem{Key: key, Msg: msg}) }
	o := c.Outbound
	if o.SMTPPort <= 0 || o.SMTPPort > 65535 {
		bad("outbound.smtp_port", "must be a port number (1-65535)")
	}
	if o.SourceIP != "" {
		if _, err := netip.ParseAddr(o.SourceIP); err != nil {
			bad("outbound.source_ip", strconv.Quote(o.SourceIP)+" is not an IP address")
		}
	}
	if o.RelayHost != "" {
		if h, p, err := net.SplitHostPort(o.RelayHost); err == nil {
			if n, err := strconv.Atoi(p); h == "" || err != nil || n <= 0 || n > 65535 {
				bad("outbound.relay_host", strconv.Quote(o.RelayHost)+" is not HOST:PORT")
			}
		}
	} else if o.RelayUser != "" {
		bad("outbound.relay_user", "set without relay_host")
	}
	if o.InitialConcurrency <= 0 || o.MaxConcurrency <= 0 {
		bad("outbound.initial_concurrency", "initial_concurrency and max_concurrency must be > 0")
	} else if o.InitialConcurrency > o.MaxConcurrency {
		bad("outbound.initial_concurrency", "must not exceed max_concurrency")
	}
	if o.RatePerMinute < 0 {
		bad("outbound.rate_per_minute", "must not be negative (0: unlimited)")
	}
	if _, err := ParseRateLimits(o.RateLimits); err != nil {
		bad("outbound.rate_limits", err.Error())
	}
	if o.MTASTSCacheSize <= 0 {
		bad("outbound.mta_sts_cache_size", "must be > 0")
	}
	if o.MessagesPerConn <= 0 {
		bad("outbound.messages_per_connection", "must be > 0")
	}
	if o.RetryMin <= 0 {
		bad("outbound.retry_min", "must be > 0")
	}
	if o.RetryMax < o.RetryMin {
		bad("outbound.retry_max", "must be at least retry_min")
	}
	if o.QueueLifetime <= 0 {
		bad("outbound.queue_lifetime", "must be > 0")
	}
	if o.SRSMaxAge < 24*time.Hour || o.SRSMaxAge > 1000*24*time.Hour {
		bad("outbound.srs_max_age", "must be between 24h and 24000h (1 to 1000 days)")
	}
	if o.DelayNotice < 0 {
		bad("outbound.delay_notice", "must not be negative (0: no delay notices)")
	}
	t := o.Timeouts
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"connect", t.Connect}, {"greeting", t.Greeting}, {"command", t.Command}, {"mail", t.Mail},
		{"rcpt", t.Rcpt}, {"data_init", t.DataInit}, {"data_block", t.DataBlock}, {"data_end", t.DataEnd},
	} {
		if d.v <= 0 {
			bad("outbound.timeouts."+d.key, "must be > 0")
		}
	}
	l := o.Limits
	for _, k := range []struct {
		key string
		v   int
	}{
		{"messages_per_hour", l.MessagesPerHour}, {"messages_per_day", l.MessagesPerDay},
		{"recipients_per_message", l.RecipientsPerMessage}, {"new_recipients_per_day", l.NewRecipientsPerDay},
		{"domain_messages_per_hour", l.DomainMessagesPerHour}, {"domain_messages_per_day", l.DomainMessagesPerDay},
		{"bounce_min_sample", l.BounceMinSample}, {"suspend_after_hits", l.SuspendAfterHits},
		{"suspend_login_networks", l.SuspendLoginNetworks}, {"known_recipients", l.KnownRecipients},
		{"max_accounts", l.MaxAccounts},
	} {
		if k.v <= 0 {
			bad("outbound.limits."+k.key, "must be > 0 (there is no unlimited; use a large number)")
		}
	}
	if l.MessagesPerDay > 0 && l.MessagesPerHour > l.MessagesPerDay {
		bad("outbound.limits.messages_per_hour", "must not exceed messages_per_day")
	}
	for _, k := range []struct {
		key string
		v   float64
	}{{"bounce_ratio", l.BounceRatio}, {"suspend_bounce_ratio", l.SuspendBounceRatio}} {
		if k.v <= 0 || k.v > 1 {
			bad("outbound.limits."+k.key, "must be a share between 0 and 1 (e.g. 0.3)")
		}
	}
	if l.SuspendWindow <= 0 {
		bad("outbound.limits.suspend_window", "must be > 0")
	}
	d := c.DNS
	for _, r := range d.Resolver {
		host := r
		if h, _, err := net.SplitHostPort(r); err == nil && validHostPort(r) {
			host = h
		}
		if _, err := netip.ParseAddr(host); err != nil {
			bad("dns.resolver", strconv.Quote(r)+" is not an IP address or IP:port")
		}
	}
	if d.Timeout <= 0 {
		bad("dns.timeout", "must be > 0")
	}
	if d.Attempts <= 0 {
		bad("dns.attempts", "must be > 0")
	}
	if d.BreakerFailures < 1 || d.BreakerFailures > 1000 {
		bad("dns.breaker_failures", "must be between 1 and 1000")
	}
	if d.BreakerCooldown < time.Second || d.BreakerCooldown > time.Hour {
		bad("dns.breaker_cooldown", "must be between 1s and 1h")
	}
	if d.CacheSize < 0 {
		bad("dns.cache_size", "must not be negative (0 disables the cache)")
	}
	if d.MaxTTL <= 0 {
		bad("dns.max_ttl", "must be > 0")
	}
	if d.MaxNegativeTTL < 0 {
		bad("dns.max_negative_ttl", "must not be negative")
	}
	return ps
}

// ParseRateLimits reads "NAME=N" entries (messages per minute to the
// destination domain or MX host NAME).
func ParseRateLimits(entries []string) (map[string]int, error) {
	out := map[string]int{}
	for _, e := range entries {
		name, n, ok := strings.Cut(e, "=")
		name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
		v, err := strconv.Atoi(strings.TrimSpace(n))
		if !ok || name == "" || strings.ContainsAny(name, " @/:") || err != nil || v < 0 {
			return nil, fmt.Errorf("%q is not NAME=MESSAGES_PER_MINUTE", e)
		}
		out[name] = v
	}
	return out, nil
}
