// Package mailauth authenticates inbound mail: SPF (RFC 7208) of the
// MAIL FROM identity, or of the HELO identity for the null reverse-path;
// DKIM (RFC 6376) verification of every signature; DMARC (RFC 7489)
// alignment and policy with the organizational domain from the public
// suffix list; and the Authentication-Results header field (RFC 8601) that
// records the results under this server's authserv-id, with any field
// claiming that id removed (RFC 8601 5).
//
// A Check starts at MAIL FROM, so the SPF lookups run while the client
// sends its recipients and data; the end of DATA (Finish) verifies the
// DKIM signatures, looks up the DMARC policy and waits for SPF, all within
// a time budget. Every lookup goes through internal/resolver. A DNS
// timeout or server failure is a temperror and never a "fail": a message
// is never refused because a lookup did not answer.
//
// Decide turns the results and the configured Policy into what happens to
// the message: accepted, delivered to the Junk folder, refused, or
// deferred.
package mailauth

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
)

// DefaultTimeout is the budget of one message's lookups: RFC 7208 4.6.4
// asks SPF evaluation to allow at least 20 seconds.
const DefaultTimeout = 20 * time.Second

// maxSignatures bounds the DKIM signatures verified per message (each
// costs a key lookup and an RSA or Ed25519 verification); more are
// ignored.
const maxSignatures = 8

// Config configures a Checker.
type Config struct {
	// Hostname is the authserv-id written into Authentication-Results
	// and whose forged fields are removed.
	Hostname string
	Resolver Resolver
	// Timeout bounds the lookups of SPF, and separately those of DKIM
	// and DMARC at the end of DATA. 0: DefaultTimeout.
	Timeout time.Duration
	// Percent returns a number in [0, 100) for DMARC's pct sampling
	// (RFC 7489 6.6.4); nil: random.
	Percent func() int
}

// Checker authenticates messages. It is safe for concurrent use.
type Checker struct {
	cfg Config
}

// New returns a Checker.
func New(cfg Config) (*Checker, error) {
	if cfg.Hostname == "" || cfg.Resolver == nil {
		return nil, fmt.Errorf("mailauth: hostname and resolver are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Percent == nil {
		cfg.Percent = func() int { return rand.IntN(100) }
	}
	return &Checker{cfg: cfg}, nil
}

// Envelope is what the SMTP session knows at MAIL FROM.
type Envelope struct {
	IP   netip.Addr // the client's address
	Helo string     // the EHLO/HELO argument
	From string     // the reverse-path, "" for the null one
}

// Check is the authentication of one message, started at MAIL FROM.
type Check struct {
	c   *Checker
	env Envelope
	// The SPF checks: the identities known at once, the results when the
	// lookups end (each channel receives one). helo is nil when the HELO
	// identity is not checked on its own.
	from, heloID SPFResult
	spf, helo    chan SPFResult
	cancel       context.CancelFunc
}

// Begin starts the SPF checks of env in the background: the MAIL FROM
// identity (RFC 7208 2.4; for the null reverse-path, the HELO name), and
// the HELO identity on its own (2.3) when it is a domain name. Cancel ctx,
// or call Close, to stop them.
func (c *Checker) Begin(ctx context.Context, env Envelope) *Check {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	ch := &Check{c: c, env: env, spf: make(chan SPFResult, 1), cancel: cancel}
	ch.from = SPFResult{Identity: "mailfrom", Sender: env.From}
	if _, d, ok := cutLast(env.From, "@"); ok && env.From != "" {
		ch.from.Domain = normDomain(d)
		if h := normDomain(env.Helo); isDomainName(h) {
			ch.heloID = SPFResult{Identity: "helo", Sender: env.Helo, Domain: h}
			ch.helo = make(chan SPFResult, 1)
		}
	} else {
		ch.from.Identity, ch.from.Sender, ch.from.Domain = "helo", env.Helo, normDomain(env.Helo)
	}
	go func() { ch.spf <- c.checkSPF(ctx, env.IP, env.Helo, env.From, ch.from) }()
	if ch.helo != nil {
		go func() { ch.helo <- c.checkSPF(ctx, env.IP, env.Helo, "", ch.heloID) }()
	}
	return ch
}

// Close stops lookups still running. It is safe to call more than once.
func (ch *Check) Close() { ch.cancel() }

// SPFResult is the outcome of an SPF check.
type SPFResult struct {
	Result   spf.Result // none, neutral, pass, fail, softfail, temperror, permerror
	Identity string     // "mailfrom" or "helo" (RFC 8601 2.7.2)
	Domain   string     // the domain checked
	Sender   string     // the identity as written in the header: the address, or the HELO name
	Err      error      // why, for the log and the comment
}

func normDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }

// isDomainName reports whether a HELO argument is a domain with at least
// two labels, not an address literal (RFC 7208 2.3: only a fully
// qualified domain name can have a HELO record).
func isDomainName(h string) bool {
	return strings.Contains(h, ".") && !strings.HasPrefix(h, "[") && net.ParseIP(h) == nil
}

// checkSPF evaluates the identity r names: check_host() of RFC 7208 4
// with the sender (empty for the HELO identity) and the HELO name.
func (c *Checker) checkSPF(ctx context.Context, ip netip.Addr, helo, sender string, r SPFResult) SPFResult {
	if !isDomainName(r.Domain) || !ip.IsValid() {
		// No domain to ask about (an address literal as HELO names none).
		r.Result = spf.None
		return r
	}
	// The library counts the RFC 7208 4.6.4 limits: 10 lookups, 2 void
	// lookups, 10 MX names; past them the result is permerror.
	r.Result, r.Err = spf.CheckHostWithSender(ip.AsSlice(), helo, sender,
		spf.WithContext(ctx), spf.WithResolver(spfDNS{c.cfg.Resolver}))
	if r.Result == spf.TempError && ctx.Err() != nil {
		r.Err = fmt.Errorf("lookups did not finish in time: %w", ctx.Err())
	}
	return r
}

// wait returns the result from ch, or base as a temperror when ctx ends
// first: the identity stays known, so DMARC still sees that an aligned
// check is unfinished (temperror) and never fails the message for it.
func wait(ctx context.Context, ch chan SPFResult, base SPFResult) SPFResult {
	select {
	case r := <-ch:
		ch <- r // Finish may be asked again; keep the result
		return r
	case <-ctx.Done():
		base.Result, base.Err = spf.TempError, fmt.Errorf("lookups did not finish in time: %w", ctx.Err())
		return base
	}
}

// Finish authenticates the message (as received, the session's Received
// field first) and returns the results. It waits for the SPF check, and
// for DKIM and DMARC lookups, no longer than the budget; the ones that
// did not answer are temperror. It fails only when msg cannot be read,
// or with ErrHeaderTooLong.
func (ch *Check) Finish(ctx context.Context, msg io.ReaderAt, size int64) (*Result, error) {
	c := ch.c
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	res := &Result{authservID: c.cfg.Hostname}
	fields, err := readHeader(msg, size)
	if err != nil {
		return nil, err
	}
	res.fields = fields
	res.DKIM = c.verifyDKIM(ctx, msg, size, fields)
	res.SPF = wait(ctx, ch.spf, ch.from)
	if ch.helo != nil {
		h := wait(ctx, ch.helo, ch.heloID)
		res.HELO = &h
	}
	res.DMARC = c.evalDMARC(ctx, fields, res.SPF, res.DKIM)
	return res, nil
}
