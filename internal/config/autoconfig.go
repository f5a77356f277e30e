package config

import (
	"net"
	"time"
)

// AutoconfigConfig configures what agua publishes for its local domains:
// the HTTP listener for client autoconfiguration and MTA-STS policies, and
// settings of the DNS records `agua domain dns` prints.
type AutoconfigConfig struct {
	Listen       string        `toml:"listen" doc:"HTTP listener (host:port) serving Thunderbird autoconfig, Outlook autodiscover, Apple .mobileconfig and the MTA-STS policy of every local domain, behind the shield. Empty: none (the default: these documents only help on a public server whose autoconfig., autodiscover. and mta-sts. names point here, normally on :443 or behind a TLS proxy)."`
	TLS          bool          `toml:"tls" doc:"Serve the listener over TLS with the server certificate (MTA-STS needs HTTPS with a certificate senders trust)."`
	MTASTSMode   string        `toml:"mta_sts_mode" doc:"MTA-STS policy mode (RFC 8461 5): testing (report failures, deliver anyway), enforce, or none."`
	MTASTSMaxAge time.Duration `toml:"mta_sts_max_age" doc:"How long senders cache the MTA-STS policy (max_age, RFC 8461 3.2; whole seconds, at most a year)."`
	PublicIPs    []string      `toml:"public_ips" doc:"This server's public addresses, listed in the SPF record that agua domain dns prints. Empty: v=spf1 mx -all."`
}

func defaultAutoconfig() AutoconfigConfig {
	return AutoconfigConfig{MTASTSMode: "testing", MTASTSMaxAge: 7 * 24 * time.Hour}
}

func (a AutoconfigConfig) validate() []Problem {
	var ps []Problem
	bad := func(key, msg string) { ps = append(ps, Problem{Key: "autoconfig." + key, Msg: msg}) }
	if a.Listen != "" && !validHostPort(a.Listen) {
		bad("listen", hostPortProblem(a.Listen))
	}
	switch a.MTASTSMode {
	case "testing", "enforce", "none":
	default:
		bad("mta_sts_mode", "must be testing, enforce or none, not \""+a.MTASTSMode+"\"")
	}
	if a.MTASTSMaxAge < time.Second || a.MTASTSMaxAge > 31557600*time.Second || a.MTASTSMaxAge%time.Second != 0 {
		bad("mta_sts_max_age", "must be whole seconds between 1s and one year (31557600s, RFC 8461 3.2)")
	}
	for _, ip := range a.PublicIPs {
		if net.ParseIP(ip) == nil {
			bad("public_ips", "\""+ip+"\" is not an IP address")
		}
	}
	return ps
}
