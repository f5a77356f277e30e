// Package shield is a defence layer for any Go TCP or HTTP service: it keeps
// a server up and serving its real users while it is under attack. It
// imports nothing mail-specific; agua's SMTP, POP3, IMAP and admin servers
// use it, and so can any other service.
//
// # What it does
//
//   - Rules: allow and deny by address or CIDR (IPv4 and IPv6), inline
//     (Config.Rules) or in rule files (Config.RuleFiles) that are reloaded on
//     change (fsnotify, debounced) and on [Shield.Reload]. The longest prefix
//     wins. Rules compile into an immutable snapshot swapped atomically, so
//     the accept path takes no global lock, and deciding to refuse a client
//     (and counting it for the logs) allocates nothing; a dropped client
//     costs no more. A reload that fails keeps the old rules and names every bad
//     line as file:line: reason. A million rules load in under a second.
//   - Limits per listener, per address and per prefix (Config.IPv4Prefix,
//     Config.IPv6Prefix): concurrent connections and a connection-rate token
//     bucket. Refusals are temporary (421, -ERR [SYS/TEMP], 429).
//   - Behaviour bans: protocol sessions report events ([Report]); crossing a
//     threshold (Config.Thresholds) bans the address, repeat offenders for
//     longer (Config.BanFactor up to Config.BanMaxTTL), and a prefix once
//     Config.PrefixBanThreshold of its addresses are banned. Bans expire on
//     their own and survive restarts (Options.StateDir).
//   - Shared state: bans, offender memory, known-good addresses, lockdown
//     and failed logins go through a [StateStore] ([LocalStore] by default;
//     Options.Store for one shared by several nodes, whose behaviour
//     thresholds then count every node's events: StateStore.AddCounts,
//     flushed every 100 ms). Decisions read a local snapshot and never
//     wait for the store.
//   - Open events: the shield defines [AuthFailure], [AuthSuccess] and
//     [ProtocolError]; a service registers its own behaviours ([Register]:
//     name, default thresholds per address and per network, ban text,
//     duration and escalation, dry run) and reports them the same way.
//   - Actions: reject (a short protocol-correct reply through
//     ListenerConfig.Reject), drop (close, nothing written) or tarpit (held
//     silently, bounded by Config.TarpitMaxHeld).
//   - Fair capacity: addresses that authenticated or delivered accepted mail
//     are known-good; a share of each listener (Config.ReservedKnownGood) is
//     kept for them. When a listener is full, an idle connection that is
//     neither authenticated nor known-good is closed for a newcomer, taken
//     from the network holding the largest share (IPv4 /16 then /24, IPv6
//     /32, /48, /64): for a known-good client always, for a stranger when
//     its own network holds a smaller share (max-min fairness; fair.go).
//   - Fair delivery ([Shield.Gate]): a queue in front of a shared stage,
//     known-good clients first without starving strangers, networks taking
//     turns.
//   - Reputation, explained ([Shield.Reputation], Config.Reputation): a
//     decaying score per address and per network, kept by part (bans by
//     escalation level, each reported event by its weight, an outside
//     [ScoreSource] such as DNS lists). A good score counts as known-good
//     for capacity and serves the client in lockdown; a bad one makes it
//     untrusted: no reserve, and the first evicted (score.go).
//   - Lockdown ([Shield.SetLockdown]): only allowlisted and known-good
//     addresses (and those of a good enough reputation) are served.
//   - Dry run, per rule ("dry-run"), per threshold or global: log "shield
//     would block" and enforce nothing.
//   - Logs that stay small: see Logs below.
//   - PROXY protocol v1/v2 from Config.TrustedProxies: the shield judges the
//     client the proxy names, never the proxy.
//   - Every table keyed by something a client controls is bounded
//     (Config.TableSize, least recently used forgotten first).
//   - A bounded, persisted event history for reports ([Shield.History],
//     [Shield.Timeline]): per address and minute, events, refusals and
//     admissions, plus bans and unbans (Config.HistoryRetention,
//     Config.HistoryMaxRecords, Config.HistoryMaxAddresses).
//
// Allowlisted addresses (allow rules, Config.Allow) and trusted proxies are
// never refused, limited or banned.
//
// Specifications: the PROXY protocol, versions 1 and 2 (HAProxy's
// proxy-protocol.txt), read with github.com/pires/go-proxyproto. No RFC
// governs the rest; behaviour follows Postfix postscreen (pregreet, tarpit),
// Dovecot (per-account delay without lockout) and fail2ban (escalating bans).
//
// # Logs
//
// Denials are counted per (address or prefix, source, action) and logged
// once per Config.LogInterval, never once per connection:
//
//	msg="shield denied" addr=203.0.113.7 count=21998 source=shield.rules:12 action=drop interval=1m0s
//
// Bans, unbans and reloads are one stable line each: msg="shield ban",
// msg="shield unban", msg="shield reload", msg="shield reload failed". The
// shield logs through Options.Logger.
//
// # Use from a TCP service
//
//	s, err := shield.New(cfg, shield.Options{Logger: log, StateDir: "data/shield"})
//	if err != nil { ... }
//	defer s.Close()
//	inner, _ := net.Listen("tcp", ":25")
//	ln := s.Listener(inner, shield.ListenerConfig{
//		Name: "smtp",
//		Reject: func(c net.Conn, d shield.Decision) {
//			if d.Temporary {
//				fmt.Fprintf(c, "421 4.7.0 %s\r\n", d.Reason)
//			} else {
//				fmt.Fprintf(c, "554 5.7.1 %s\r\n", d.Reason)
//			}
//		},
//	})
//	for {
//		c, err := ln.Accept() // refused clients never come out of Accept
//		...
//		go session(c)
//	}
//
// A session reports what its client does and ends when told to; it works on
// the accepted conn or on a *tls.Conn wrapping it:
//
//	if d := shield.Report(conn, shield.ProtocolError); d.Action != shield.Allow {
//		reply(d) // 421 when d.Temporary, else 554; then close
//		return
//	}
//	d := shield.ReportAuth(conn, user, ok)
//	if !ok { time.Sleep(s.AccountDelay(user)) } // slows guessing, never locks the account
//
// A session may also watch [Conn.Done] (via [FromConn]) to stop when the
// shield closes the connection (ban, eviction, lockdown, newly denied).
//
// # Use from an HTTP service
//
//	srv := &http.Server{
//		Handler:     s.Middleware("admin", mux),
//		ConnContext: shield.ConnContext, // lets handlers use shield.ConnFromRequest(r).Report
//	}
//	srv.Serve(s.Listener(inner, shield.ListenerConfig{Name: "admin"}))
//
// The middleware answers 403 to policy refusals, 429 with Retry-After to
// rate refusals, and closes the connection for drop and tarpit. It also
// works behind a plain listener, judging r.RemoteAddr.
//
// # Rule files
//
// One rule per line; # starts a comment; blank lines are ignored:
//
//	[allow|deny] ADDRESS[/BITS] [reject|drop|tarpit] [dry-run]
//
//	deny 203.0.113.7
//	deny 198.51.100.0/24 drop
//	allow 198.51.100.10            # longest prefix wins: allowed inside the denied /24
//	deny 2001:db8::/32 tarpit dry-run
//	203.0.113.9                    # bare address: deny with Config.DefaultAction
//
// Host bits are masked (10.1.2.3/8 is 10.0.0.0/8) and IPv4-mapped IPv6 forms
// are unmapped. A later line for the same prefix replaces an earlier one;
// Config.Allow wins over every rule. A rules file that does not exist is
// empty and is watched for creation.
//
// Every configuration field, its default and its meaning is in the toml and
// doc tags of [Config] (agua generates its configuration reference from
// them) and in README.md.
package shield
