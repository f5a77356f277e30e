package shield

import (
	"context"
	"net/netip"
	"strings"
	"time"
)

// Distributed guessing: a botnet spreads its password guesses over many
// addresses, each staying under the per-address threshold. The shield
// counts failed logins three ways:
//
//   - per address (thresholds.auth_failure): bans the address;
//   - per network (thresholds.network_auth_failure, over Config.Guessing
//     prefixes, /24 and /48 by default): bans the network. Such a ban spares
//     the network's known-good addresses, so a real user behind the same
//     provider keeps logging in;
//   - per account: every failure counts towards AccountDelay, and the
//     account remembers the networks that failed against it and those it
//     logged in from (its owner's). Failures from Guessing.AccountNetworks
//     networks or more mark it under a distributed attack: strangers'
//     failures then wait the longest delay at once. The owner's networks
//     never wait, so the attack never locks the owner out.

// GuessingConfig configures the per-network and per-account counting of
// failed logins.
type GuessingConfig struct {
	IPv4Prefix      int `toml:"ipv4_prefix" doc:"IPv4 network size over which failed logins are counted (thresholds.network_auth_failure bans such a network) and an account's owner networks are remembered"`
	IPv6Prefix      int `toml:"ipv6_prefix" doc:"IPv6 network size over which failed logins are counted and owner networks remembered"`
	AccountNetworks int `toml:"account_networks" doc:"distinct networks failing logins against one account within account_delay_window that mark it under a distributed attack: failures from networks it never logged in from then wait account_delay_max at once (its owner's networks never wait)"`
}

func defaultGuessing() GuessingConfig {
	return GuessingConfig{IPv4Prefix: 24, IPv6Prefix: 48, AccountNetworks: 3}
}

func (g GuessingConfig) validate(bad func(field, format string, args ...any)) {
	if g.IPv4Prefix < 8 || g.IPv4Prefix > 32 {
		bad("guessing.ipv4_prefix", "must be between 8 and 32")
	}
	if g.IPv6Prefix < 16 || g.IPv6Prefix > 128 {
		bad("guessing.ipv6_prefix", "must be between 16 and 128")
	}
	if g.AccountNetworks < 2 {
		bad("guessing.account_networks", "must be >= 2")
	}
}

// guessNet returns the network of addr for failed-login counting.
func (s *Shield) guessNet(addr netip.Addr) netip.Prefix {
	g := &s.cfg().Guessing
	bits := g.IPv6Prefix
	if addr.Is4() {
		bits = g.IPv4Prefix
	}
	p, _ := addr.Prefix(bits)
	return p
}

// eventNet returns the network over which r's network threshold counts.
func (s *Shield) eventNet(addr netip.Addr, r *eventRule) netip.Prefix {
	if r.b.Guessing {
		return s.guessNet(addr)
	}
	return s.netPrefix(addr)
}

// accountNets and accountOwners bound what one account remembers.
const (
	accountNets   = 8
	accountOwners = 4
)

// accountState is what the shield remembers about one account.
type accountState struct {
	fails    window                 // failed logins from anywhere (every node)
	nets     [accountNets]netSeen   // networks that failed, most recent kept
	owners   [accountOwners]netSeen // networks that logged in; until = last success + KnownGoodTTL
	attacked int64                  // when "under distributed attack" was last logged
}

type netSeen struct {
	net netip.Prefix
	at  int64 // unix nanoseconds: last failure, or (owners) valid until
}

// remember puts net in list at time at, replacing its own entry or the
// oldest one.
func remember(list []netSeen, net netip.Prefix, at int64) {
	oldest := 0
	for i := range list {
		if list[i].net == net {
			list[i].at = at
			return
		}
		if list[i].at < list[oldest].at {
			oldest = i
		}
	}
	list[oldest] = netSeen{net: net, at: at}
}

// failingNets counts the networks that failed within the window.
func (a *accountState) failingNets(ns, window int64) int {
	n := 0
	for _, x := range a.nets {
		if x.net.IsValid() && ns-x.at < window {
			n++
		}
	}
	return n
}

// isOwner reports whether net logged in to the account recently.
func (a *accountState) isOwner(net netip.Prefix, ns int64) bool {
	for _, x := range a.owners {
		if x.net == net && x.at > ns {
			return true
		}
	}
	return false
}

// reportAccount counts a failed login on account from addr (the zero
// Addr: unknown) for AccountDelay, and tells the other nodes.
func (s *Shield) reportAccount(account string, addr netip.Addr, now time.Time) {
	if account == "" {
		return
	}
	account = strings.ToLower(account)
	s.countAccountFailure(account, now)
	if addr.IsValid() && !s.pol.Load().exempt(addr) {
		s.accountFailedFrom(account, addr, now)
	}
	s.toStore(func(ctx context.Context, st StateStore) error { return st.AddAccountFailure(ctx, account, now) })
}

// countAccountFailure counts a failed login on account (lower-cased) in
// this node's window.
func (s *Shield) countAccountFailure(account string, at time.Time) {
	s.accounts.do(account, true, func(a *accountState, _ bool) {
		a.fails.add(at.UnixNano(), s.cfg().AccountDelayWindow.Nanoseconds())
	})
}

// accountFailedFrom records the failing network and logs, once per
// window, that the account is under a distributed attack.
func (s *Shield) accountFailedFrom(account string, addr netip.Addr, now time.Time) {
	cfg := s.cfg()
	ns, win := now.UnixNano(), cfg.AccountDelayWindow.Nanoseconds()
	net := s.guessNet(addr)
	var nets int
	var announce bool
	s.accounts.do(account, true, func(a *accountState, _ bool) {
		if a.isOwner(net, ns) {
			return // the owner's typo is no attack
		}
		remember(a.nets[:], net, ns)
		nets = a.failingNets(ns, win)
		if nets >= cfg.Guessing.AccountNetworks && ns-a.attacked >= win {
			a.attacked, announce = ns, true
		}
	})
	if announce {
		s.log.Warn("shield account under distributed attack", "account", account, "networks", nets,
			"window", cfg.AccountDelayWindow.String(), "effect", "failures from networks the account never logged in from wait account_delay_max")
	}
}

// markOwner remembers addr's network as one the account logs in from.
func (s *Shield) markOwner(account string, addr netip.Addr, now time.Time) {
	if account == "" || !addr.IsValid() {
		return
	}
	cfg := s.cfg()
	until := now.Add(cfg.KnownGoodTTL).UnixNano()
	net := s.guessNet(addr)
	s.accounts.do(strings.ToLower(account), true, func(a *accountState, _ bool) {
		remember(a.owners[:], net, until)
		for i := range a.nets { // its own failures were the owner's typos
			if a.nets[i].net == net {
				a.nets[i] = netSeen{}
			}
		}
	})
}

// AccountDelay returns how long to wait before answering a failed login on
// account: 0 with no recent failures, then 100ms doubling with each failure
// from any address within AccountDelayWindow, capped at AccountDelayMax.
// The account is never locked (Dovecot-style): the real user only ever
// waits when they get their password wrong, if callers delay failures only.
// AccountDelayFrom also knows who is asking.
func (s *Shield) AccountDelay(account string) time.Duration {
	return s.AccountDelayFrom(account, netip.Addr{})
}

// AccountDelayFrom is AccountDelay for a failed login from addr: 0 from a
// network the account logged in from before (its owner's: the owner is
// never slowed by an attack on their account); AccountDelayMax at once
// from any other network while the account is under a distributed attack
// (failures from Guessing.AccountNetworks networks within the window);
// else AccountDelay's doubling delay.
func (s *Shield) AccountDelayFrom(account string, addr netip.Addr) time.Duration {
	if account == "" {
		return 0
	}
	cfg := s.cfg()
	account = strings.ToLower(account)
	ns, win := s.now().UnixNano(), cfg.AccountDelayWindow.Nanoseconds()
	var n int32
	var nets int
	owner := false
	addr = unmap(addr)
	s.accounts.do(account, false, func(a *accountState, _ bool) {
		if addr.IsValid() && a.isOwner(s.guessNet(addr), ns) {
			owner = true
			return
		}
		n = a.fails.current(ns, win)
		nets = a.failingNets(ns, win)
	})
	if owner || n <= 0 {
		return 0
	}
	if nets >= cfg.Guessing.AccountNetworks {
		return cfg.AccountDelayMax
	}
	d := 100 * time.Millisecond
	for i := int32(1); i < n && d < cfg.AccountDelayMax; i++ {
		d *= 2
	}
	return min(d, cfg.AccountDelayMax)
}

// activeBan is banLookup without the bans that spare addr: a network ban
// for guessing does not refuse the network's known-good addresses.
func (s *Shield) activeBan(addr netip.Addr, now time.Time) *ban {
	b := s.banLookup(addr, now)
	if b != nil && b.spareGood && s.isKnownGood(addr, now.UnixNano()) {
		return nil
	}
	return b
}

// sparesKnownGood reports whether a ban with this reason spares known-good
// addresses: a network ban for a Guessing behaviour.
func sparesKnownGood(p netip.Prefix, reason string, manual bool) bool {
	if manual || p.IsSingleIP() {
		return false
	}
	name, ok := strings.CutPrefix(reason, networkPrefix)
	if !ok {
		return false
	}
	ev, ok := LookupEvent(name)
	return ok && ev.Behaviour().Guessing
}
