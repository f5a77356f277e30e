package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Scenario is one attack: it makes one attempt from src and names what the
// attacker got ("served", "refused", "dropped", "held", "dial_failed", or a
// scenario-specific outcome such as "auth_failed").
type Scenario func(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string

// Scenarios are the attacks `agua bench -attack` knows.
var Scenarios = map[string]Scenario{
	"connect":   attackConnect,   // connect and close at once (connection flood)
	"banner":    attackBanner,    // connect, read the banner, close (banner flood)
	"slowloris": attackSlowloris, // connect and hold the socket silently until the run ends
	"pregreet":  attackPregreet,  // speak before the banner
	"brute":     attackBrute,     // AUTH with wrong passwords (needs a submission target)
	"harvest":   attackHarvest,   // RCPT TO random addresses of the recipient's domain
	"flood":     attackFlood,     // deliver messages as fast as accepted
	"junk":      attackJunk,      // random bytes
	"http":      attackHTTP,      // HTTP request on the mail port
	"tls":       attackTLS,       // TLS handshakes on the implicit-TLS port, then close
}

func scenarioNames() string {
	var names []string
	for n := range Scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func runAttacker(ctx context.Context, cfg *Config, sc Scenario, src *addrPool, st *attackStats, limiter <-chan time.Time) {
	for ctx.Err() == nil {
		if limiter != nil {
			select {
			case <-limiter:
			case <-ctx.Done():
				return
			}
		}
		st.attempts.Add(1)
		out := sc(ctx, cfg, src.get(), st)
		if ctx.Err() != nil && out == "dial_failed" {
			return
		}
		st.outcomes.add(out)
		if out == "dial_failed" {
			// Out of ports or refused by the kernel: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// dialOutcome names a failed dial. A server that accepts and at once
// closes with a reset (a "drop", or a full listener) can make connect(2)
// itself report ECONNRESET: the reset arrived before the dialer read
// SO_ERROR. That is the server dropping the attacker, not a dial failure.
func dialOutcome(err error) string {
	if errors.Is(err, syscall.ECONNRESET) {
		return "dropped"
	}
	return "dial_failed"
}

// greet dials and reads the first reply line, classifying the result.
func greet(ctx context.Context, cfg *Config, src netip.Addr, target string) (net.Conn, *smtpConn, string) {
	c, err := dialFrom(ctx, src, target, 5*time.Second)
	if err != nil {
		return nil, nil, dialOutcome(err)
	}
	s := newSMTPConn(c)
	c.SetDeadline(time.Now().Add(cfg.HoldTimeout))
	code, err := s.reply()
	switch {
	case err != nil && errClass(err) == "timeout":
		c.Close()
		return nil, nil, "held"
	case err != nil:
		c.Close()
		return nil, nil, "dropped"
	case code == 220, strings.HasPrefix(s.last, "+OK"), strings.HasPrefix(s.last, "* OK"):
		// An SMTP banner, or a POP3/IMAP greeting when those ports are
		// the target of a protocol-agnostic flood.
		return c, s, "served"
	default:
		c.Close()
		return nil, nil, "refused"
	}
}

// greetEHLO is greet followed by EHLO, the start of every attack that
// talks SMTP; the session gets 30 s from there. On failure the connection
// is closed and only the outcome returned.
func greetEHLO(ctx context.Context, cfg *Config, src netip.Addr) (net.Conn, *smtpConn, string) {
	c, s, out := greet(ctx, cfg, src, cfg.AttackTarget)
	if c == nil {
		return nil, nil, out
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if code, err := s.ehlo(cfg.Helo); err != nil || code != 250 {
		c.Close()
		return nil, nil, "refused_ehlo"
	}
	return c, s, out
}

func attackConnect(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, err := dialFrom(ctx, src, cfg.AttackTarget, 5*time.Second)
	if err != nil {
		return dialOutcome(err)
	}
	c.Close()
	return "connected"
}

func attackBanner(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, _, out := greet(ctx, cfg, src, cfg.AttackTarget)
	if c != nil {
		c.Close()
	}
	return out
}

func attackSlowloris(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, err := dialFrom(ctx, src, cfg.AttackTarget, 5*time.Second)
	if err != nil {
		return dialOutcome(err)
	}
	defer c.Close()
	n := st.held.Add(1)
	defer st.held.Add(-1)
	for {
		m := st.maxHeld.Load()
		if n <= m || st.maxHeld.CompareAndSwap(m, n) {
			break
		}
	}
	// Hold until the run ends or the server closes the socket; read (and
	// ignore) whatever it sends, never answer.
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			c.Close()
		case <-done:
		}
	}()
	defer close(done)
	buf := make([]byte, 512)
	got := 0
	for {
		n, err := c.Read(buf)
		got += n
		if err != nil {
			if ctx.Err() != nil {
				return "held_to_end"
			}
			if got == 0 {
				return "dropped"
			}
			return "closed_by_server"
		}
	}
}

func attackPregreet(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, err := dialFrom(ctx, src, cfg.AttackTarget, 5*time.Second)
	if err != nil {
		return dialOutcome(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "EHLO %s\r\n", cfg.Helo)
	s := newSMTPConn(c)
	c.SetDeadline(time.Now().Add(cfg.HoldTimeout))
	code, err := s.reply()
	switch {
	case err != nil && errClass(err) == "timeout":
		return "held"
	case err != nil:
		return "dropped"
	case code == 220:
		if code, _ := s.reply(); code == 250 {
			return "served"
		}
		return "refused_after_banner"
	}
	return "refused"
}

func attackBrute(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, s, out := greetEHLO(ctx, cfg, src)
	if c == nil {
		return out
	}
	defer c.Close()
	user := cfg.User
	if user == "" {
		user = cfg.Rcpt
	}
	var b [6]byte
	for i := 0; i < 3; i++ {
		rand.Read(b[:])
		code, err := s.authPlain(user, fmt.Sprintf("guess-%x", b))
		switch {
		case err != nil:
			return "closed_mid_session"
		case code == 235:
			return "auth_succeeded"
		case code == 421:
			return "banned_mid_session"
		case code == 530 || code == 502 || code == 503 || code == 538:
			return "auth_not_offered"
		}
	}
	s.cmd("QUIT")
	return "auth_failed"
}

func attackHarvest(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, s, out := greetEHLO(ctx, cfg, src)
	if c == nil {
		return out
	}
	defer c.Close()
	if code, err := s.cmd("MAIL FROM:<harvest@bench.example>"); err != nil || code != 250 {
		return "refused_mail"
	}
	_, domain, _ := strings.Cut(cfg.Rcpt, "@")
	var b [6]byte
	for i := 0; i < 10; i++ {
		rand.Read(b[:])
		code, err := s.cmd("RCPT TO:<%x@%s>", b, domain)
		switch {
		case err != nil:
			return "closed_mid_session"
		case code == 421:
			return "banned_mid_session"
		case code == 250:
			return "recipient_accepted"
		}
	}
	s.cmd("QUIT")
	return "recipients_refused"
}

func attackFlood(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, s, out := greetEHLO(ctx, cfg, src)
	if c == nil {
		return out
	}
	defer c.Close()
	body := message("flood@bench.example", cfg.Rcpt, cfg.MsgSize)
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		code, err := s.transaction("flood@bench.example", cfg.Rcpt, body)
		switch {
		case err != nil:
			return "closed_mid_session"
		case code == 421:
			return "banned_mid_session"
		case code != 250:
			return "message_refused"
		}
	}
	s.cmd("QUIT")
	return "messages_accepted"
}

func attackJunk(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, s, out := greet(ctx, cfg, src, cfg.AttackTarget)
	if c == nil {
		return out
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	junk := make([]byte, 600)
	for i := 0; i < 12; i++ {
		rand.Read(junk)
		junk[len(junk)-1] = '\n'
		if _, err := c.Write(junk); err != nil {
			return "closed_mid_session"
		}
		if _, err := s.reply(); err != nil {
			return "closed_mid_session"
		}
	}
	return "tolerated"
}

func attackHTTP(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	c, err := dialFrom(ctx, src, cfg.AttackTarget, 5*time.Second)
	if err != nil {
		return dialOutcome(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", cfg.AttackTarget)
	c.SetDeadline(time.Now().Add(cfg.HoldTimeout))
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := c.Read(buf)
		total += n
		if err != nil {
			if errClass(err) == "timeout" {
				return "held"
			}
			if total == 0 {
				return "dropped"
			}
			return "answered_and_closed"
		}
	}
}

func attackTLS(ctx context.Context, cfg *Config, src netip.Addr, st *attackStats) string {
	target := cfg.TLSTarget
	if target == "" {
		return "no_tls_target"
	}
	c, err := dialFrom(ctx, src, target, 5*time.Second)
	if err != nil {
		return dialOutcome(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(cfg.HoldTimeout))
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.HandshakeContext(ctx); err != nil {
		if errClass(err) == "timeout" {
			return "held"
		}
		return "handshake_refused"
	}
	return "handshake_done"
}
