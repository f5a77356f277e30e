package shield

import (
	"fmt"
	"net/netip"
	"time"
)

// Config is the shield's configuration. agua embeds it under [shield] and
// generates its documentation from the toml and doc tags. Start from
// [DefaultConfig]: a zero limit is an error, never "unlimited".
type Config struct {
	Rules          []string `toml:"rules" doc:"inline rules, one per entry, same format as a rules file line (e.g. \"deny 198.51.100.0/24 drop\")"`
	RuleFiles      []string `toml:"rule_files" doc:"rules files, one rule per line, reloaded on change; a missing file counts as empty and is watched for creation"`
	Allow          []string `toml:"allow" doc:"addresses or CIDRs that are never refused, limited or banned"`
	TrustedProxies []string `toml:"trusted_proxies" doc:"CIDRs of proxies allowed to send a PROXY protocol v1/v2 header; never refused, limited or banned themselves"`
	DefaultAction  Action   `toml:"default_action" doc:"action of a deny rule that names none: reject, drop or tarpit"`
	CloseOnDeny    bool     `toml:"close_on_deny" doc:"close open connections of addresses that a reloaded rule newly denies"`
	Lockdown       bool     `toml:"lockdown" doc:"serve only allowlisted and known-good addresses, drop everyone else silently"`
	DryRun         bool     `toml:"dry_run" doc:"log what rules, bans and limits would refuse (\"shield would block\") but enforce none of them; lockdown and listener capacity still apply"`

	IPv4Prefix int `toml:"ipv4_prefix" doc:"IPv4 prefix length that groups addresses into one network for per-prefix limits and prefix bans"`
	IPv6Prefix int `toml:"ipv6_prefix" doc:"IPv6 prefix length that groups addresses into one network for per-prefix limits and prefix bans"`
	TableSize  int `toml:"table_size" doc:"capacity of every address-keyed table (per-address and per-prefix state, bans, offender history, known-good, accounts); least recently used entries are forgotten first"`

	BanTTL             time.Duration `toml:"ban_ttl" doc:"duration of a first behaviour ban"`
	BanFactor          float64       `toml:"ban_factor" doc:"each repeat ban of the same offender lasts this many times longer"`
	BanMaxTTL          time.Duration `toml:"ban_max_ttl" doc:"longest an escalated ban lasts"`
	BanAction          Action        `toml:"ban_action" doc:"what banned clients get: reject, drop or tarpit"`
	OffenderTTL        time.Duration `toml:"offender_ttl" doc:"how long a banned address is remembered for escalation"`
	PrefixBanThreshold int           `toml:"prefix_ban_threshold" doc:"ban the whole prefix (ipv4_prefix/ipv6_prefix) once this many of its addresses are banned"`

	KnownGoodTTL      time.Duration `toml:"known_good_ttl" doc:"how long an address that authenticated or delivered accepted mail stays known-good"`
	ReservedKnownGood float64       `toml:"reserved_known_good" doc:"fraction of each listener's max_conns kept for known-good addresses (0 to 0.9)"`

	TarpitHold    time.Duration `toml:"tarpit_hold" doc:"how long a tarpitted connection is held before it is closed"`
	TarpitMaxHeld int           `toml:"tarpit_max_held" doc:"most tarpitted connections held at once; beyond, tarpit becomes drop"`

	AccountDelayMax    time.Duration `toml:"account_delay_max" doc:"longest delay AccountDelay asks for after failed logins on one account (accounts are never locked)"`
	AccountDelayWindow time.Duration `toml:"account_delay_window" doc:"window over which failed logins on one account are counted for AccountDelay"`

	LogInterval  time.Duration `toml:"log_interval" doc:"denials are counted and logged once per interval as one line per address or prefix, source and action"`
	SaveInterval time.Duration `toml:"save_interval" doc:"how often bans, offender history and known-good addresses are written to the state folder"`

	HistoryRetention    time.Duration `toml:"history_retention" doc:"how long the event history (per address and minute: events, refusals, admissions; bans and unbans) is kept for reports, at most 2160h (90 days)"`
	HistoryMaxAddresses int           `toml:"history_max_addresses" doc:"most addresses (and most ban and unban events) the event history keeps; beyond, the oldest minutes are dropped first, then new addresses count in the timeline only"`
	HistoryMaxRecords   int           `toml:"history_max_records" doc:"most (address, minute) records the event history keeps; the oldest minutes are dropped first"`

	Reputation ReputationConfig `toml:"reputation" doc:"a decaying score per address and per network, from bans, reported events and the outside (DNS list) score; used for capacity and lockdown (kept per node, saved in the state folder)"`
	Guessing   GuessingConfig   `toml:"guessing" doc:"failed logins counted per network and per account (distributed password guessing)"`
	Accept     AcceptConfig     `toml:"accept" doc:"accept sockets of the listeners agua binds (Shield.Listen); a change applies at the next restart"`
	Kernel     KernelConfig     `toml:"kernel" doc:"kernel offload: drop rules, drop blocks and escalated bans mirrored into nftables (off by default)"`
	Limits     LimitsConfig     `toml:"limits" doc:"connection limits"`
	Thresholds ThresholdsConfig `toml:"thresholds" doc:"behaviour thresholds by event name (network_<name>: counted per network); crossing one bans the address or network"`
}

// LimitsConfig holds the connection limits. Per-address and per-prefix
// limits count connections across all listeners of one Shield.
type LimitsConfig struct {
	MaxConns          int           `toml:"max_conns" doc:"default ceiling of concurrent connections per listener (ListenerConfig.MaxConns overrides)"`
	PerIPConns        int           `toml:"per_ip_conns" doc:"concurrent connections from one address"`
	PerPrefixConns    int           `toml:"per_prefix_conns" doc:"concurrent connections from one prefix (ipv4_prefix/ipv6_prefix)"`
	PerIPRate         float64       `toml:"per_ip_rate" doc:"new connections per second from one address (token bucket rate)"`
	PerIPBurst        int           `toml:"per_ip_burst" doc:"new connections from one address allowed in a burst"`
	PerPrefixRate     float64       `toml:"per_prefix_rate" doc:"new connections per second from one prefix"`
	PerPrefixBurst    int           `toml:"per_prefix_burst" doc:"new connections from one prefix allowed in a burst"`
	RequestRate       float64       `toml:"request_rate" doc:"HTTP requests per second from one address (Middleware)"`
	RequestBurst      int           `toml:"request_burst" doc:"HTTP requests from one address allowed in a burst"`
	EvictIdle         time.Duration `toml:"evict_idle" doc:"an unauthenticated connection idle this long may be closed to make room when a listener is full: for a known-good client, or for a newcomer from a network holding a smaller share than the largest (fair capacity)"`
	RejectTimeout     time.Duration `toml:"reject_timeout" doc:"write deadline for the short refusal written to a rejected client"`
	MaxPendingRejects int           `toml:"max_pending_rejects" doc:"most refusals being written at once; beyond, reject becomes drop"`
	ProxyTimeout      time.Duration `toml:"proxy_timeout" doc:"how long a trusted proxy has to send its PROXY protocol header"`
}

// Threshold is one behaviour threshold: Count events within Window bans the
// address (or, for a network threshold, the network).
type Threshold struct {
	Count  int           `toml:"count" doc:"events within the window that ban the address"`
	Window time.Duration `toml:"window" doc:"window over which events are counted"`
	DryRun bool          `toml:"dry_run" doc:"log \"shield would ban\" instead of banning"`

	badKey, badMsg string // a key that did not decode, reported by Validate
}

// DefaultConfig returns safe defaults for every field.
func DefaultConfig() Config {
	return Config{
		DefaultAction:       Reject,
		CloseOnDeny:         true,
		IPv4Prefix:          24,
		IPv6Prefix:          64,
		TableSize:           100_000,
		BanTTL:              10 * time.Minute,
		BanFactor:           2,
		BanMaxTTL:           24 * time.Hour,
		BanAction:           Reject,
		OffenderTTL:         7 * 24 * time.Hour,
		PrefixBanThreshold:  5,
		KnownGoodTTL:        30 * 24 * time.Hour,
		ReservedKnownGood:   0.2,
		TarpitHold:          5 * time.Minute,
		TarpitMaxHeld:       10_000,
		AccountDelayMax:     5 * time.Second,
		AccountDelayWindow:  15 * time.Minute,
		LogInterval:         time.Minute,
		SaveInterval:        time.Minute,
		HistoryRetention:    7 * 24 * time.Hour,
		HistoryMaxAddresses: 100_000,
		HistoryMaxRecords:   200_000,
		Limits: LimitsConfig{
			MaxConns:          1000,
			PerIPConns:        20,
			PerPrefixConns:    100,
			PerIPRate:         10,
			PerIPBurst:        30,
			PerPrefixRate:     50,
			PerPrefixBurst:    150,
			RequestRate:       20,
			RequestBurst:      60,
			EvictIdle:         5 * time.Second,
			RejectTimeout:     2 * time.Second,
			MaxPendingRejects: 1000,
			ProxyTimeout:      5 * time.Second,
		},
		Reputation: defaultReputation(),
		Guessing:   defaultGuessing(),
		Kernel:     defaultKernel(),
		Thresholds: defaultThresholds(),
	}
}

// Validate returns every problem in c, each naming its field by its toml key.
// Rule syntax is checked too (inline rules only; rule files are read by New
// and Reload).
func (c Config) Validate() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	positiveInt := func(field string, v int) {
		if v <= 0 {
			bad(field, "must be > 0")
		}
	}
	positiveDur := func(field string, v time.Duration) {
		if v <= 0 {
			bad(field, "must be > 0 (e.g. \"10m\")")
		}
	}
	positiveFloat := func(field string, v float64) {
		if !(v > 0) {
			bad(field, "must be > 0")
		}
	}
	for i, r := range c.Rules {
		if _, err := parseRuleLine(r); err != nil {
			bad(fmt.Sprintf("rules[%d]", i), "%v", err)
		}
	}
	for i, f := range c.RuleFiles {
		if f == "" {
			bad(fmt.Sprintf("rule_files[%d]", i), "empty path")
		}
	}
	for i, a := range c.Allow {
		if _, err := parsePrefix(a); err != nil {
			bad(fmt.Sprintf("allow[%d]", i), "%v", err)
		}
	}
	for i, a := range c.TrustedProxies {
		if _, err := parsePrefix(a); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
	if c.DefaultAction == Allow || c.DefaultAction > Tarpit {
		bad("default_action", "must be reject, drop or tarpit")
	}
	if c.BanAction == Allow || c.BanAction > Tarpit {
		bad("ban_action", "must be reject, drop or tarpit")
	}
	if c.IPv4Prefix < 8 || c.IPv4Prefix > 32 {
		bad("ipv4_prefix", "must be between 8 and 32")
	}
	if c.IPv6Prefix < 16 || c.IPv6Prefix > 128 {
		bad("ipv6_prefix", "must be between 16 and 128")
	}
	positiveInt("table_size", c.TableSize)
	positiveDur("ban_ttl", c.BanTTL)
	if c.BanFactor < 1 {
		bad("ban_factor", "must be >= 1")
	}
	positiveDur("ban_max_ttl", c.BanMaxTTL)
	if c.BanMaxTTL > 0 && c.BanMaxTTL < c.BanTTL {
		bad("ban_max_ttl", "must be >= ban_ttl")
	}
	positiveDur("offender_ttl", c.OffenderTTL)
	positiveInt("prefix_ban_threshold", c.PrefixBanThreshold)
	positiveDur("known_good_ttl", c.KnownGoodTTL)
	if c.ReservedKnownGood < 0 || c.ReservedKnownGood > 0.9 {
		bad("reserved_known_good", "must be between 0 and 0.9")
	}
	positiveDur("tarpit_hold", c.TarpitHold)
	positiveInt("tarpit_max_held", c.TarpitMaxHeld)
	positiveDur("account_delay_max", c.AccountDelayMax)
	positiveDur("account_delay_window", c.AccountDelayWindow)
	positiveDur("log_interval", c.LogInterval)
	positiveDur("save_interval", c.SaveInterval)
	if c.HistoryRetention < time.Minute || c.HistoryRetention > maxHistoryRetention {
		bad("history_retention", "must be between 1m and 2160h (90 days)")
	}
	positiveInt("history_max_addresses", c.HistoryMaxAddresses)
	positiveInt("history_max_records", c.HistoryMaxRecords)

	l := c.Limits
	positiveInt("limits.max_conns", l.MaxConns)
	positiveInt("limits.per_ip_conns", l.PerIPConns)
	positiveInt("limits.per_prefix_conns", l.PerPrefixConns)
	positiveFloat("limits.per_ip_rate", l.PerIPRate)
	positiveInt("limits.per_ip_burst", l.PerIPBurst)
	positiveFloat("limits.per_prefix_rate", l.PerPrefixRate)
	positiveInt("limits.per_prefix_burst", l.PerPrefixBurst)
	positiveFloat("limits.request_rate", l.RequestRate)
	positiveInt("limits.request_burst", l.RequestBurst)
	positiveDur("limits.evict_idle", l.EvictIdle)
	positiveDur("limits.reject_timeout", l.RejectTimeout)
	positiveInt("limits.max_pending_rejects", l.MaxPendingRejects)
	positiveDur("limits.proxy_timeout", l.ProxyTimeout)

	c.Reputation.validate(bad)
	c.Guessing.validate(bad)
	c.Accept.validate(bad)
	c.Kernel.validate(bad)
	c.Thresholds.validate(bad)
	return errs
}

// parsePrefix parses "192.0.2.1", "192.0.2.0/24", "2001:db8::/32". The
// prefix is masked and IPv4-mapped IPv6 forms are unmapped.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			var err error
			p, err = netip.ParsePrefix(s)
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("bad CIDR %q", s)
			}
			return canonPrefix(p), nil
		}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address %q", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad address %q: zones are not allowed", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CanonPrefix is p as the shield holds it: masked, and ::ffff:a.b.c.d/N
// (N >= 96) as a.b.c.d/(N-96). A StateStore indexing addresses uses it to
// match what the shield passes and stores.
func CanonPrefix(p netip.Prefix) netip.Prefix { return canonPrefix(p) }

// LastAddr is the last address of p.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// canonPrefix masks p and turns ::ffff:a.b.c.d/N (N >= 96) into a.b.c.d/(N-96).
func canonPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}
