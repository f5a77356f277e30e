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
	c      *Checker
	env    Envelope
	spf    chan SPFResult // receives the one result
	cancel context.CancelFunc
}

// Begin starts the SPF check of env in the background (RFC 7208 2.4: the
// MAIL FROM identity; for the null reverse-path, the HELO identity, 2.3).
// Cancel ctx, or call Close, to stop it.
func (c *Checker) Begin(ctx context.Context, env Envelope) *Check {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	ch := &Check{c: c, env: env, spf: make(chan SPFResult, 1), cancel: cancel}
	go func() { ch.spf <- c.checkSPF(ctx, env) }()
	return ch
}

// Close stops lookups still running. It is safe to call more than once.
func (ch *Check) Close() { ch.cancel() }

// SPFResult is the outcome of the SPF check.
type SPFResult struct {
	Result   spf.Result // none, neutral, pass, fail, softfail, temperror, permerror
	Identity string     // "mailfrom" or "helo" (RFC 8601 2.7.2)
	Domain   string     // the domain checked
	Sender   string     // the identity as written in the header: the address, or the HELO name
	Err      error      // why, for the log and the comment
}

func (c *Checker) checkSPF(ctx context.Context, env Envelope) SPFResult {
	r := SPFResult{Identity: "mailfrom", Sender: env.From}
	if _, d, ok := cutLast(env.From, "@"); ok && env.From != "" {
		r.Domain = d
	} else {
		r.Identity, r.Sender, r.Domain = "helo", env.Helo, env.Helo
	}
	r.Domain = strings.ToLower(strings.TrimSuffix(r.Domain, "."))
	if r.Domain == "" || !env.IP.IsValid() {
		r.Result = spf.None
		return r
	}
	if ip := net.ParseIP(r.Domain); ip != nil || strings.HasPrefix(r.Domain, "[") {
		// An address literal as HELO names no domain (RFC 7208 2.3).
		r.Result = spf.None
		return r
	}
	// The library counts the RFC 7208 4.6.4 limits: 10 lookups, 2 void
	// lookups, 10 MX names; past them the result is permerror.
	r.Result, r.Err = spf.CheckHostWithSender(env.IP.AsSlice(), env.Helo, env.From,
		spf.WithContext(ctx), spf.WithResolver(spfDNS{c.cfg.Resolver}))
	if r.Result == spf.TempError && ctx.Err() != nil {
		r.Err = fmt.Errorf("lookups did not finish in time: %w", ctx.Err())
	}
	return r
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
	select {
	case res.SPF = <-ch.spf:
		ch.spf <- res.SPF // Finish may be asked again; keep the result
	case <-ctx.Done():
		res.SPF = SPFResult{Result: spf.TempError, Identity: "mailfrom", Sender: ch.env.From, Err: ctx.Err()}
	}
	res.DMARC = c.evalDMARC(ctx, fields, res.SPF, res.DKIM)
	return res, nil
}
