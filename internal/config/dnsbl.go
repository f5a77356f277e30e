package config

import (
	"fmt"
	"time"

	"github.com/agua-mail/agua/internal/dnsbl"
)

// DNSBLConfig configures the DNS blocklists and allowlists asked about
// every client of an MX listener (internal/dnsbl).
type DNSBLConfig struct {
	Lists              []string      `toml:"lists" doc:"Lists in Postfix postscreen_dnsbl_sites syntax, name[=pattern][*weight]: \"zen.spamhaus.org=127.0.0.[2..11]*3\", \"list.dnswl.org=127.0.[0..255].[0..255]*-2\". The pattern is addresses separated by ; with octets as numbers or [a..b;c] sets (no pattern: any answer counts); the weight defaults to 1, a negative weight makes an allowlist. Empty (the default): no lookups."`
	Threshold          int           `toml:"threshold" doc:"A client whose listing lists' weights add up to this or more gets the action (by default refused before the greeting: 554 5.7.1, reason dnsbl:<list>)."`
	AllowlistThreshold int           `toml:"allowlist_threshold" doc:"A score at or below this (with negative-weight lists) skips the refusal whatever the blocklists say and marks the client known-good for the shield (shield event dnswl: reserved capacity, served under lockdown)."`
	Action             string        `toml:"action" doc:"What a score at or above threshold does: refuse (554 5.7.1 before the greeting); tarpit (served, slowly: the greeting waits tarpit_greeting and every reply tarpit_reply, in the session's own goroutine, and the client is untrusted as below); untrusted (served, but from its next connection, once its score is cached, as a stranger to the shield even if known-good: no reserved capacity, the first evicted when a full listener makes room, greylisted when [greylist] is on); or log (only logged: a dry run for a new list). The whole [dnsbl] section is applied live on reload."`
	TarpitGreeting     time.Duration `toml:"tarpit_greeting" doc:"With action = tarpit: how much later the greeting is sent (at most 5m, RFC 5321 4.5.3.2.1)."`
	TarpitReply        time.Duration `toml:"tarpit_reply" doc:"With action = tarpit: how long each reply after the greeting waits (at most 1m)."`
	Timeout            time.Duration `toml:"timeout" doc:"Bound on the lookups of one client address (every list at once). A list that has not answered by then, or answers SERVFAIL, counts as not listing the address."`
	BannerBudget       time.Duration `toml:"banner_budget" doc:"Longest the greeting waits for lookups still running (the wait overlaps smtp.banner_delay); then the client is served as not listed, and the answers, when they come, are cached for its next connection."`
	CacheTTL           time.Duration `toml:"cache_ttl" doc:"How long the score of an address is kept (the resolver also honours each answer's TTL)."`
	CacheSize          int           `toml:"cache_size" doc:"Most addresses whose score is kept; beyond that expired scores are forgotten first, then others at random (lookups in flight are kept until they end)."`
}

func defaultDNSBL() DNSBLConfig {
	return DNSBLConfig{Threshold: 1, AllowlistThreshold: -1, Action: "refuse", TarpitGreeting: 20 * time.Second, TarpitReply: 2 * time.Second,
		Timeout: 10 * time.Second, BannerBudget: time.Second, CacheTTL: time.Hour, CacheSize: 10000}
}

// Sites parses Lists; validate reports the same errors.
func (d DNSBLConfig) Sites() ([]dnsbl.Site, error) {
	var out []dnsbl.Site
	for _, l := range d.Lists {
		s, err := dnsbl.ParseSite(l)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (d DNSBLConfig) validate() []Problem {
	var ps []Problem
	bad := func(key, msg string) { ps = append(ps, Problem{Key: "dnsbl." + key, Msg: msg}) }
	seen := map[string]bool{}
	for i, l := range d.Lists {
		s, err := dnsbl.ParseSite(l)
		if err != nil {
			bad("lists", fmt.Sprintf("[%d]: %v", i, err))
			continue
		}
		if seen[s.Name] {
			bad("lists", fmt.Sprintf("[%d]: %s is listed twice", i, s.Name))
		}
		seen[s.Name] = true
	}
	if d.Threshold < 1 {
		bad("threshold", "must be at least 1")
	}
	if d.AllowlistThreshold >= d.Threshold {
		bad("allowlist_threshold", "must be below threshold")
	}
	switch d.Action {
	case "refuse", "log", "tarpit", "untrusted":
	default:
		bad("action", "must be refuse, tarpit, untrusted or log, not \""+d.Action+"\"")
	}
	if d.TarpitGreeting < 0 || d.TarpitGreeting > 5*time.Minute {
		bad("tarpit_greeting", "must be between 0 and 5m")
	}
	if d.TarpitReply < 0 || d.TarpitReply > time.Minute {
		bad("tarpit_reply", "must be between 0 and 1m")
	}
	if d.Timeout < 100*time.Millisecond || d.Timeout > time.Minute {
		bad("timeout", "must be between 100ms and 1m")
	}
	if d.BannerBudget < 0 || d.BannerBudget > d.Timeout {
		bad("banner_budget", "must be between 0 and timeout")
	}
	if d.CacheTTL < time.Second || d.CacheTTL > 7*24*time.Hour {
		bad("cache_ttl", "must be between 1s and 168h")
	}
	if d.CacheSize < 1 || d.CacheSize > 10_000_000 {
		bad("cache_size", "must be between 1 and 10000000")
	}
	return ps
}
