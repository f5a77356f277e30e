// Package report turns the shield's event history (shield.HistorySnapshot)
// into reports an operator can act on:
//
//   - abuse reports: the offending addresses grouped by network, as one
//     plain-text email per network for the network's abuse desk, as CSV
//     (one row per address), or as XARF v4 JSON (https://xarf.org, the
//     xarf-core and connection type schemas of xarf/xarf-spec 4.0.0);
//   - an attack report: the timeline of an incident, peak rates, what the
//     shield did, the top offending networks and the legitimate traffic
//     served meanwhile.
//
// It reads only the shield's history, so it fits any service behind the
// shield. Reverse DNS (RFC 1035 PTR records) is optional and only asked of
// the DNS server the caller names.
package report

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/agua-mail/agua/shield"
)

// AbuseOptions say how to build an abuse report.
type AbuseOptions struct {
	Hostname string    // the reporting server, named in every report
	Contact  string    // where the abuse desk can answer; "" = postmaster@Hostname
	Prefix4  int       // IPv4 network size grouping addresses (default 24)
	Prefix6  int       // IPv6 network size (default 48)
	Min      uint64    // offences (events and refusals) an address needs to be reported, unless it was banned (default 10)
	Resolver *Resolver // reverse DNS of the offending addresses; nil = none
}

// Offender is one reported address (or a network the shield counted as a
// whole) with what it did.
type Offender struct {
	Addr     netip.Prefix
	First    time.Time
	Last     time.Time
	Auth     uint64 // failed logins (brute force)
	Unknown  uint64 // unknown recipients (harvesting)
	Protocol uint64 // protocol errors
	Pregreet uint64 // spoke before the greeting
	Messages uint64 // messages accepted (counted as abuse only when banned for a flood)
	Rcpts    uint64 // recipients accepted (ditto)
	Flood    bool   // banned, or refused by a ban, for a message or recipient flood
	Refused  uint64 // connections refused
	Bans     int    // behaviour bans issued (not the operator's)
	PTR      string // reverse DNS name, "" when unknown
	Evidence []string
}

// Offences is what makes the address worth reporting.
func (o *Offender) Offences() uint64 {
	n := o.Auth + o.Unknown + o.Protocol + o.Pregreet + o.Refused
	if o.Flood {
		n += o.Messages + o.Rcpts
	}
	return n
}

// Activities names what the address did, most telling first.
func (o *Offender) Activities() []string {
	var out []string
	if o.Auth > 0 {
		out = append(out, "brute force (failed logins)")
	}
	if o.Unknown > 0 {
		out = append(out, "address harvesting (unknown recipients)")
	}
	if o.Flood {
		out = append(out, "flood (messages or recipients)")
	}
	if o.Protocol > 0 {
		out = append(out, "protocol errors")
	}
	if o.Pregreet > 0 {
		out = append(out, "talking before the greeting (spam software)")
	}
	if o.Refused > 0 {
		out = append(out, "refused connections")
	}
	return out
}

// Network is the offenders of one network.
type Network struct {
	Prefix    netip.Prefix
	Offenders []*Offender
	Domain    string // the most common reverse DNS domain of its addresses, "" when none resolved
}

// First, Last and Offences sum up the network.
func (n *Network) First() time.Time {
	t := n.Offenders[0].First
	for _, o := range n.Offenders {
		if o.First.Before(t) {
			t = o.First
		}
	}
	return t
}

func (n *Network) Last() time.Time {
	var t time.Time
	for _, o := range n.Offenders {
		if o.Last.After(t) {
			t = o.Last
		}
	}
	return t
}

func (n *Network) Offences() uint64 {
	var s uint64
	for _, o := range n.Offenders {
		s += o.Offences()
	}
	return s
}

// AbuseReport is the offenders of a period, by network, most offences
// first.
type AbuseReport struct {
	Hostname string
	Contact  string
	Now      time.Time
	Since    time.Time
	Networks []*Network
}

// Abuse builds the abuse report of snap.
func Abuse(ctx context.Context, snap shield.HistorySnapshot, opts AbuseOptions) *AbuseReport {
	if opts.Prefix4 <= 0 || opts.Prefix4 > 32 {
		opts.Prefix4 = 24
	}
	if opts.Prefix6 <= 0 || opts.Prefix6 > 128 {
		opts.Prefix6 = 48
	}
	if opts.Min == 0 {
		opts.Min = 10
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.Contact == "" {
		opts.Contact = "postmaster@" + opts.Hostname
	}
	r := &AbuseReport{Hostname: opts.Hostname, Contact: opts.Contact, Now: snap.Now.UTC(), Since: snap.Since.UTC()}
	nets := map[netip.Prefix]*Network{}
	for i := range snap.Addrs {
		o := offender(&snap.Addrs[i])
		if o == nil || (o.Offences() < opts.Min && o.Bans == 0) {
			continue
		}
		bits := opts.Prefix6
		if o.Addr.Addr().Is4() {
			bits = opts.Prefix4
		}
		p, _ := o.Addr.Addr().Prefix(min(bits, o.Addr.Bits()))
		n := nets[p]
		if n == nil {
			n = &Network{Prefix: p}
			nets[p] = n
			r.Networks = append(r.Networks, n)
		}
		n.Offenders = append(n.Offenders, o)
	}
	if opts.Resolver != nil {
		var all []*Offender
		for _, n := range r.Networks {
			all = append(all, n.Offenders...)
		}
		opts.Resolver.resolve(ctx, all)
		for _, n := range r.Networks {
			n.Domain = commonDomain(n.Offenders)
		}
	}
	for _, n := range r.Networks {
		slices.SortFunc(n.Offenders, func(a, b *Offender) int {
			if c := cmp.Compare(b.Offences(), a.Offences()); c != 0 {
				return c
			}
			return a.Addr.Addr().Compare(b.Addr.Addr())
		})
	}
	slices.SortFunc(r.Networks, func(a, b *Network) int {
		if c := cmp.Compare(b.Offences(), a.Offences()); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	return r
}

// offender reads what an address did; nil when it did nothing reportable.
func offender(a *shield.AddrHistory) *Offender {
	o := &Offender{Addr: a.Addr, First: a.First.UTC(), Last: a.Last.UTC(), Evidence: a.Evidence,
		Auth: a.Events["auth_failure"], Unknown: a.Events["unknown_recipient"], Protocol: a.Events["protocol_error"],
		Pregreet: a.Events["pregreet"], Messages: a.Events["message"], Rcpts: a.Events["recipient"]}
	for _, r := range a.Refused {
		if r.DryRun || r.Source == "capacity" || len(r.Source) > 8 && r.Source[:8] == "evicted:" {
			continue // a full server refuses everyone: not the client's doing
		}
		o.Refused += r.Count
		if r.Source == "ban:message" || r.Source == "ban:recipient" {
			o.Flood = true
		}
	}
	for _, b := range a.Bans {
		if b.Kind != "ban" || b.Manual {
			continue // an operator's block is not evidence
		}
		o.Bans++
		if b.Reason == "message" || b.Reason == "recipient" {
			o.Flood = true
		}
	}
	if o.Offences() == 0 && o.Bans == 0 {
		return nil
	}
	return o
}
