// Package report turns the shield's event history (shield.HistorySnapshot)
// into reports an operator can act on:
//
//   - abuse reports: the addresses that abused the service (failed logins,
//     harvesting, protocol abuse, coming back while banned for it), as one
//     plain-text email per abuse contact (the owner's reverse DNS domain
//     when known, else a /16 or /48 with its /24s listed), as CSV
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
	"strings"
	"time"

	"github.com/agua-mail/agua/shield"
)

// AbuseOptions say how to build an abuse report.
type AbuseOptions struct {
	Hostname string    // the reporting server, named in every report
	Contact  string    // where the abuse desk can answer; "" = postmaster@Hostname
	Prefix4  int       // IPv4 network size grouping addresses (default 24)
	Prefix6  int       // IPv6 network size (default 48)
	Contact4 int       // IPv4 network size sharing one email when reverse DNS names no owner (default 16)
	Contact6 int       // IPv6 network size sharing one email (default 48)
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
	Refused  uint64 // connections refused (rules, limits, bans; not for a full server)
	Banned   uint64 // of those, refused by a ban for the address's own abuse: it kept coming back
	Bans     int    // behaviour bans issued (not the operator's)
	// Spread names the behaviour a network was banned for as a whole
	// (network_auth_failure: "auth_failure"), "" for none: its addresses
	// each stayed under the per-address threshold.
	Spread   string
	PTR      string // reverse DNS name, "" when unknown
	Evidence []string
}

// Offences is everything the shield held against the address, refusals
// by rules and limits included: what an attack report counts.
func (o *Offender) Offences() uint64 {
	return o.abuse() - o.Banned + o.Refused
}

// abuse is what makes the address worth an abuse report: failed logins,
// harvesting, protocol abuse, and coming back while banned for it (or the
// messages of a flood it was banned for). A refusal by a rate limit or the
// operator's rule is not abuse: a bursty legitimate relay gets those too.
func (o *Offender) abuse() uint64 {
	n := o.Auth + o.Unknown + o.Protocol + o.Pregreet + o.Banned
	if o.Flood {
		n += o.Messages + o.Rcpts
	}
	return n
}

// Activities names what the address did, most telling first.
func (o *Offender) Activities() []string {
	var out []string
	if o.Spread == "auth_failure" {
		out = append(out, "distributed brute force (failed logins spread over many addresses of the network)")
	}
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
	if o.Banned > 0 {
		out = append(out, "coming back while banned for it (refused connections)")
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

// Contact is the networks that share one abuse contact, and so one
// email: those whose addresses' reverse DNS names one domain, or else those
// inside one /16 (IPv4) or /48 (IPv6).
type Contact struct {
	Domain   string       // the owner's domain, from reverse DNS; "" when unknown
	Prefix   netip.Prefix // the enclosing network when Domain is ""
	Networks []*Network
}

// AbuseReport is the offenders of a period, by network, most offences
// first, and the same networks by abuse contact.
type AbuseReport struct {
	Hostname string
	Contact  string
	Now      time.Time
	Since    time.Time
	Networks []*Network
	Contacts []*Contact
}

// Abuse builds the abuse report of snap.
func Abuse(ctx context.Context, snap shield.HistorySnapshot, opts AbuseOptions) *AbuseReport {
	opts.Prefix4 = sizeOr(opts.Prefix4, 32, 24)
	opts.Prefix6 = sizeOr(opts.Prefix6, 128, 48)
	opts.Contact4 = min(sizeOr(opts.Contact4, 32, 16), opts.Prefix4)
	opts.Contact6 = min(sizeOr(opts.Contact6, 128, 48), opts.Prefix6)
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
	// A network banned as a whole for a behaviour is reported with every
	// address of it that took part, each one below Min: that is how the
	// behaviour was spread.
	var spread []netip.Prefix
	for i := range snap.Addrs {
		if o := offender(&snap.Addrs[i]); o != nil && o.Spread != "" {
			spread = append(spread, o.Addr)
		}
	}
	inSpread := func(o *Offender) bool {
		for _, p := range spread {
			if p.Contains(o.Addr.Addr()) && o.abuse() > 0 {
				return true
			}
		}
		return false
	}
	r.Networks = networks(snap, opts.Prefix4, opts.Prefix6, func(o *Offender) bool { return o.abuse() >= opts.Min || o.Bans > 0 || inSpread(o) })
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
	byKey := map[string]*Contact{}
	for _, n := range r.Networks { // most offences first, so are the contacts
		c := &Contact{Domain: n.Domain}
		key := "domain " + n.Domain
		if n.Domain == "" {
			bits := opts.Contact6
			if n.Prefix.Addr().Is4() {
				bits = opts.Contact4
			}
			c.Prefix, _ = n.Prefix.Addr().Prefix(min(bits, n.Prefix.Bits()))
			key = c.Prefix.String()
		}
		if byKey[key] == nil {
			byKey[key] = c
			r.Contacts = append(r.Contacts, c)
		}
		byKey[key].Networks = append(byKey[key].Networks, n)
	}
	return r
}

func sizeOr(bits, most, def int) int {
	if bits <= 0 || bits > most {
		return def
	}
	return bits
}

// networks groups the offenders that report selects by network (prefix4
// or prefix6 bits), most offences first.
func networks(snap shield.HistorySnapshot, prefix4, prefix6 int, report func(*Offender) bool) []*Network {
	var out []*Network
	nets := map[netip.Prefix]*Network{}
	for i := range snap.Addrs {
		o := offender(&snap.Addrs[i])
		if o == nil || !report(o) {
			continue
		}
		bits := prefix6
		if o.Addr.Addr().Is4() {
			bits = prefix4
		}
		p, _ := o.Addr.Addr().Prefix(min(bits, o.Addr.Bits()))
		n := nets[p]
		if n == nil {
			n = &Network{Prefix: p}
			nets[p] = n
			out = append(out, n)
		}
		n.Offenders = append(n.Offenders, o)
	}
	for _, n := range out {
		slices.SortFunc(n.Offenders, func(a, b *Offender) int {
			if c := cmp.Compare(b.Offences(), a.Offences()); c != 0 {
				return c
			}
			return a.Addr.Addr().Compare(b.Addr.Addr())
		})
	}
	slices.SortFunc(out, func(a, b *Network) int {
		if c := cmp.Compare(b.Offences(), a.Offences()); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	return out
}

// behaviourBans are the reasons of the shield's own bans (its threshold
// names, and network_<name> for a network ban); any other reason is an
// operator's block.
var behaviourBans = map[string]bool{"auth_failure": true, "unknown_recipient": true, "protocol_error": true,
	"pregreet": true, "message": true, "recipient": true}

// behaviourBan returns the behaviour a ban's reason names and whether it
// banned a network for it as a whole.
func behaviourBan(reason string) (name string, network, ok bool) {
	name, network = strings.CutPrefix(reason, "network_")
	return name, network, behaviourBans[name]
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
		if reason, ok := strings.CutPrefix(r.Source, "ban:"); ok {
			if name, _, ok := behaviourBan(reason); ok {
				o.Banned += r.Count
				if name == "message" || name == "recipient" {
					o.Flood = true
				}
			}
		}
	}
	for _, b := range a.Bans {
		if b.Kind != "ban" || b.Manual {
			continue // an operator's block is not evidence
		}
		o.Bans++
		name, network, ok := behaviourBan(b.Reason)
		if ok && network && !o.Addr.IsSingleIP() {
			o.Spread = name
		}
		if name == "message" || name == "recipient" {
			o.Flood = true
		}
	}
	if o.Offences() == 0 && o.Bans == 0 {
		return nil
	}
	return o
}
