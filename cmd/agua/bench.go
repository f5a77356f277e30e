package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/bench"
	"github.com/agua-mail/agua/internal/server"
)

func cmdBench(e *env) error {
	var cfg bench.Config
	f := e.flags
	f.StringVar(&cfg.Target, "target", "127.0.0.1:2525", "host:port of the server under test (legitimate clients)")
	f.StringVar(&cfg.Proto, "proto", "smtp", "legitimate protocol: smtp (MX), submission (STARTTLS + AUTH PLAIN), pop3 (USER/PASS, STAT, RETR all, QUIT) or imap (LOGIN, SELECT, FETCH, LOGOUT)")
	f.BoolVar(&cfg.TLS, "tls", false, "pop3/imap: upgrade with STLS/STARTTLS before login")
	f.IntVar(&cfg.MaxFetch, "max-fetch", 20, "pop3/imap: most messages fetched per session")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to run")
	f.IntVar(&cfg.Legit, "legit", 20, "concurrent legitimate clients (0 = attack only)")
	legitSrc := f.String("legit-src", "", "comma-separated source addresses of legitimate clients, loopback but never 127.0.0.1 (default: drawn from -legit-pool)")
	legitPool := f.String("legit-pool", bench.DefaultLegitPool.String(), "IPv4 loopback prefix legitimate clients come from: half of them at fixed addresses (returning users), half at random ones drawn for each run (never seen before); must not hold 127.0.0.1 or overlap -attack-src")
	f.IntVar(&cfg.PerSession, "per-session", 1, "messages per legitimate session")
	f.IntVar(&cfg.MaxSessions, "sessions", 0, "sessions per legitimate client, then it stops (0 = for the whole -duration)")
	f.IntVar(&cfg.LegitRate, "legit-rate", 0, "legitimate sessions started per second, all clients together (0 = each client back to back); e.g. -legit 1000 -sessions 1 -legit-rate 100 is 1,000 logins arriving over 10 s")
	f.IntVar(&cfg.MsgSize, "size", 2048, "message size in bytes")
	f.StringVar(&cfg.From, "from", "", "MAIL FROM of legitimate mail (default: -user with -proto submission, else bench@bench.example)")
	f.StringVar(&cfg.Rcpt, "rcpt", "demo@example.test", "recipient of legitimate mail; %d is replaced by the client number (its domain is harvested by -attack harvest)")
	f.StringVar(&cfg.User, "user", "", "login for -proto submission, pop3 and imap; %d is replaced by the client number, e.g. u%d@example.test, since POP3 allows one session per mailbox (also the account -attack brute guesses)")
	f.StringVar(&cfg.Pass, "pass", "", "password for -proto submission, pop3 and imap")
	attacks := f.String("attack", "", "comma-separated attack scenarios: "+strings.Join(scenarioList(), ", "))
	f.StringVar(&cfg.AttackTarget, "attack-target", "", "host:port attacked (default: -target)")
	f.StringVar(&cfg.TLSTarget, "tls-target", "127.0.0.1:2465", "implicit-TLS host:port for -attack tls")
	attackSrc := f.String("attack-src", "127.66.0.0/16", "attacker source addresses: one address or a loopback CIDR (a botnet in one /16; 127.64.0.0/10 for one over 64 /16s), used spread over its networks")
	f.IntVar(&cfg.AttackConns, "attack-conns", 50, "concurrent attackers per scenario (for slowloris: sockets held)")
	f.IntVar(&cfg.AttackRate, "attack-rate", 0, "attempts per second per scenario (0 = as fast as possible)")
	pid := f.Int("pid", -1, "target process to sample RSS/threads/open files from /proc (-1: ask the local agua's admin socket, 0: none)")
	asJSON := f.Bool("json", false, "print the report as JSON")
	quiet := f.Bool("quiet", false, "no progress line")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("bench takes flags only")
	}
	if cfg.From == "" && cfg.Proto == "submission" {
		cfg.From = cfg.User // submission only lets a user send as itself
	}
	if *legitSrc != "" {
		for _, s := range strings.Split(*legitSrc, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("-legit-src: %q is not an address", s)
			}
			cfg.LegitSrc = append(cfg.LegitSrc, a)
		}
	}
	if p, err := netip.ParsePrefix(*legitPool); err == nil {
		cfg.LegitPool = p
	} else {
		return fmt.Errorf("-legit-pool: %q is not a CIDR", *legitPool)
	}
	if *attacks != "" {
		cfg.Attacks = strings.Split(*attacks, ",")
	}
	if p, err := netip.ParsePrefix(*attackSrc); err == nil {
		cfg.AttackSrc = p
	} else if a, err := netip.ParseAddr(*attackSrc); err == nil {
		cfg.AttackSrc = netip.PrefixFrom(a, a.BitLen())
	} else {
		return fmt.Errorf("-attack-src: %q is not an address or CIDR", *attackSrc)
	}
	if !cfg.AttackSrc.Addr().IsLoopback() && len(cfg.Attacks) > 0 {
		return fmt.Errorf("-attack-src %s is not a loopback range: the simulator only attacks from this machine's own addresses", cfg.AttackSrc)
	}
	cfg.PID = *pid
	if cfg.PID < 0 {
		// The local agua of this data folder, only if it is the target.
		cfg.PID = 0
		var st server.Status
		if admin.NewClient(server.AdminSocket(e.cfg)).Do("GET", "/v1/status", nil, &st) == nil {
			if _, ok := st.Listeners[cfg.Target]; ok {
				cfg.PID = st.PID
			}
		}
	}
	if !*quiet {
		cfg.Progress = func(r bench.Report) { fmt.Fprintf(e.stderr, "\r%s   ", bench.Progress(r)) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if !*quiet {
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	bench.WriteText(e.stdout, rep)
	return nil
}

func scenarioList() []string {
	var out []string
	for n := range bench.Scenarios {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
