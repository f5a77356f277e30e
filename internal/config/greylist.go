package config

import (
	"time"

	"github.com/agua-mail/agua/internal/greylist"
)

// GreylistConfig configures greylisting of inbound mail (internal/greylist,
// RFC 6647).
type GreylistConfig struct {
	Enabled    bool          `toml:"enabled" doc:"Greylist mail arriving on MX listeners (RFC 6647): the first attempt of a triplet (client network /24 or /64, envelope sender, recipient) gets 451 4.7.1 at RCPT TO, after the recipient is known to exist; a retry after delay and within window passes. Never greylisted: authenticated submission, allowlisted clients (shield.allow), known-good clients (shield known-good, a DNSWL hit by [dnsbl]). Off by default: it delays the first mail of every new correspondent. Applied live on reload."`
	Delay      time.Duration `toml:"delay" doc:"Least time between the first attempt and a retry that passes."`
	Window     time.Duration `toml:"window" doc:"How long after the first attempt a retry may pass; a later one is a first attempt again."`
	PassTTL    time.Duration `toml:"pass_ttl" doc:"How long a passed triplet, and an auto-allowed network, stay allowed after their last message."`
	AutoAllow  int           `toml:"auto_allow" doc:"After this many triplets of one network have passed, the network is allowed for every sender and recipient (for pass_ttl). 0: never."`
	MaxEntries int           `toml:"max_entries" doc:"Most triplets kept (and, separately, networks); when full, expired entries are forgotten first, then pending ones, then any. The table is saved in <data_dir>/greylist.json every minute and at shutdown."`
}

func defaultGreylist() GreylistConfig {
	return GreylistConfig{Delay: greylist.DefaultDelay, Window: greylist.DefaultWindow, PassTTL: greylist.DefaultPassTTL,
		AutoAllow: greylist.DefaultAutoAllow, MaxEntries: greylist.DefaultMaxEntries}
}

// Table returns the greylist.Config of g.
func (g GreylistConfig) Table() greylist.Config {
	c := greylist.Config{Delay: g.Delay, Window: g.Window, PassTTL: g.PassTTL, AutoAllow: g.AutoAllow, MaxEntries: g.MaxEntries}
	if g.AutoAllow == 0 {
		c.AutoAllow = -1
	}
	return c
}

func (g GreylistConfig) validate() []Problem {
	var ps []Problem
	bad := func(key, msg string) { ps = append(ps, Problem{Key: "greylist." + key, Msg: msg}) }
	if g.Delay < time.Second || g.Delay > 24*time.Hour {
		bad("delay", "must be between 1s and 24h")
	}
	if g.Window <= g.Delay || g.Window > 7*24*time.Hour {
		bad("window", "must be longer than delay and at most 168h")
	}
	if g.PassTTL < time.Hour || g.PassTTL > 366*24*time.Hour {
		bad("pass_ttl", "must be between 1h and 8784h (366 days)")
	}
	if g.AutoAllow < 0 || g.AutoAllow > 1000 {
		bad("auto_allow", "must be between 0 (never) and 1000")
	}
	if g.MaxEntries < 100 || g.MaxEntries > 10_000_000 {
		bad("max_entries", "must be between 100 and 10000000")
	}
	return ps
}
