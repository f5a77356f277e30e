// Package outbound delivers queued mail to other servers: the SMTP client
// side of RFC 5321 with the extensions that matter for relaying.
//
// The Engine claims due recipients from a queue, groups them by
// destination domain, finds the mail exchangers (RFC 5321 5.1: MX by
// preference, the domain itself when it has none, RFC 7505 null MX
// bounces) through internal/resolver, and sends several messages per
// connection with PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME
// (RFC 6152) and SMTPUTF8 (RFC 6531) as the peer offers them, with
// opportunistic STARTTLS (RFC 3207, RFC 7435), or DANE (RFC 7672) where
// validated TLSA records exist, or verified TLS to the MX hosts an MTA-STS
// policy (RFC 8461) names. Or it sends everything to a relay host,
// with AUTH (RFC 4954) and required TLS.
//
// Each destination starts with a few concurrent connections and gains one
// after as many successes as it has connections, up to a maximum; a 421 or
// 451 from the peer, or a failed connection, takes one away (in the manner
// of Postfix's queue manager). Temporary failures are retried with
// exponential backoff and jitter until the queue lifetime runs out;
// permanent ones bounce at once. A bounce produces a delivery status
// notification (RFC 3464) for the envelope sender, never for the null
// sender, handed to the Bounce callback.
//
// The engine sends the queued bytes as they are: DKIM signing happens
// before a message is queued.
package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver"
)

// Queue is what the engine needs of a mail queue.
type Queue interface {
	Claim(now time.Time, max int) ([]queue.Job, error)
	Open(id string) (io.ReadCloser, error)
	Update(ctx context.Context, id string, results []queue.Result) error
	Unclaim(id string, rcpts []string)
	Wake() <-chan struct{}
}

// Resolver is what the engine needs of DNS.
type Resolver interface {
	MX(ctx context.Context, domain string) ([]resolver.MX, resolver.Info, error)
	IP(ctx context.Context, host string) ([]netip.Addr, resolver.Info, error)
	TLSA(ctx context.Context, port int, host string) ([]resolver.TLSA, resolver.Info, error)
}

// BounceFunc delivers a DSN (a complete message, null reverse path) to rcpt,
// the original envelope sender.
type BounceFunc func(ctx context.Context, rcpt string, dsn []byte) error

// Options configure an Engine. Zero values take the defaults.
type Options struct {
	Queue    Queue
	Resolver Resolver
	Bounce   BounceFunc // required: where DSNs go
	Logger   *slog.Logger

	Hostname string     // EHLO name and the DSN's Reporting-MTA
	Port     int        // TCP port of mail exchangers; default 25
	SourceIP netip.Addr // local address to send from; zero: the system's choice
	Timeouts Timeouts   // RFC 5321 4.5.3.2 defaults

	// RelayHost ("HOST:PORT" or "HOST") receives all mail instead of the
	// recipients' MX hosts.
	RelayHost       string
	RelayUser       string // AUTH to the relay host (only over TLS, or on loopback)
	RelayPassword   string
	RelayRequireTLS bool // no STARTTLS or a certificate that does not verify: defer
	// TLSConfig is the base TLS client configuration (RootCAs for the
	// relay host's certificate; tests). Nil: system roots.
	TLSConfig *tls.Config
	// DisableTLS never uses STARTTLS (labs and tests only).
	DisableTLS bool
	// DisableDANE ignores TLSA records. DANE (RFC 7672) applies only to
	// MX hosts whose MX, address and TLSA answers carry the AD bit.
	DisableDANE bool
	// MTASTS gives destination domains' MTA-STS policies (RFC 8461); nil:
	// MTA-STS is not used. It does not apply to a relay host.
	MTASTS Policies

	// Rate limits messages per minute per destination domain or MX host;
	// zero: unlimited.
	Rate RateLimits

	InitialConcurrency int           // per destination; default 5
	MaxConcurrency     int           // per destination; default 20
	MaxInFlight        int           // deliveries claimed at once; default 1000
	MaxPerConnection   int           // messages per connection; default 100
	RetryMin           time.Duration // first retry after; default 5m
	RetryMax           time.Duration // retries at most this far apart; default 4h
	Lifetime           time.Duration // bounce after this long in the queue; default 5 days
	// DelayNotice: a message still not delivered this long after it was
	// queued gets one delay notice (RFC 3464 Action: delayed) to its
	// sender; 0: none.
	DelayNotice time.Duration
	Poll        time.Duration // look for due deferred mail this often; default 30s

	Now func() time.Time // the clock of queue state (tests); time.Now
}

// Defaults.
const (
	DefaultPort               = 25
	DefaultInitialConcurrency = 5  // Postfix initial_destination_concurrency
	DefaultMaxConcurrency     = 20 // Postfix default_destination_concurrency_limit
	DefaultRetryMin           = 5 * time.Minute
	DefaultRetryMax           = 4 * time.Hour
	DefaultLifetime           = 5 * 24 * time.Hour // Postfix maximal_queue_lifetime
)

// maxNoticed bounds the engine's memory of delay notices sent (noticeOnce).
const maxNoticed = 10000

// Engine delivers queued mail. Run it with Run.
type Engine struct {
	opts            Options
	q               Queue
	res             Resolver
	log             *slog.Logger
	now             func() time.Time
	hostname        string
	port            int
	sourceIP        netip.Addr
	timeouts        Timeouts
	relay           host
	relayUser       string
	relayPass       string
	relayRequireTLS bool
	noTLS           bool
	dane            bool
	sts             Policies

	rate   *rateLimiter
	wakeMu sync.Mutex
	wakeAt time.Time   // when the rate-limit timer fires
	wakeT  *time.Timer // signals freed when a rate-limited destination may send again

	mu       sync.Mutex
	noticed  map[string]bool // messages given a delay notice in this run (noticeOnce)
	dests    map[string]*dest
	inflight int
	freed    chan struct{}
	wg       sync.WaitGroup
}

// dest is one destination: a domain, or the relay host for all.
type dest struct {
	name      string
	pending   []*delivery
	workers   int
	limit     int
	successes int
}

// delivery is one message's recipients at one destination.
type delivery struct {
	job   queue.Job
	rcpts []queue.Recipient
}

// New checks the options and returns an engine.
func New(o Options) (*Engine, error) {
	if o.Queue == nil || o.Bounce == nil || (o.Resolver == nil && o.RelayHost == "") {
		return nil, errors.New("outbound: Queue, Bounce and Resolver (or a relay host) are required")
	}
	e := &Engine{
		opts: o, q: o.Queue, res: o.Resolver, log: o.Logger, now: o.Now,
		hostname: o.Hostname, port: o.Port, sourceIP: o.SourceIP, timeouts: o.Timeouts.withDefaults(),
		relayUser: o.RelayUser, relayPass: o.RelayPassword, relayRequireTLS: o.RelayRequireTLS,
		noTLS: o.DisableTLS, dane: !o.DisableDANE && !o.DisableTLS, sts: o.MTASTS, rate: newRateLimiter(o.Rate), noticed: map[string]bool{}, dests: map[string]*dest{}, freed: make(chan struct{}, 1),
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.hostname == "" {
		e.hostname = "localhost"
	}
	if e.port == 0 {
		e.port = DefaultPort
	}
	if o.RelayHost != "" {
		h, err := parseHostPort(o.RelayHost, e.port)
		if err != nil {
			return nil, fmt.Errorf("outbound: relay host: %w", err)
		}
		e.relay = h
		if _, err := netip.ParseAddr(h.name); err != nil && e.res == nil {
			return nil, errors.New("outbound: a Resolver is required for a relay host given by name")
		}
	}
	if e.relayRequireTLS && e.noTLS {
		return nil, errors.New("outbound: relay TLS required but TLS disabled")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&e.opts.InitialConcurrency, DefaultInitialConcurrency)
	def(&e.opts.MaxConcurrency, DefaultMaxConcurrency)
	def(&e.opts.MaxInFlight, 1000)
	def(&e.opts.MaxPerConnection, 100)
	e.opts.InitialConcurrency = min(e.opts.InitialConcurrency, e.opts.MaxConcurrency)
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defd(&e.opts.RetryMin, DefaultRetryMin)
	defd(&e.opts.RetryMax, DefaultRetryMax)
	defd(&e.opts.Lifetime, DefaultLifetime)
	defd(&e.opts.Poll, 30*time.Second)
	return e, nil
}

// Run delivers until ctx ends, then waits for the sessions in progress
// (which ctx's end interrupts) and gives unstarted deliveries back to the
// queue.
func (e *Engine) Run(ctx context.Context) error {
	tick := time.NewTicker(e.opts.Poll)
	defer tick.Stop()
	for {
		if err := e.fill(ctx); err != nil && !errors.Is(err, queue.ErrClosed) {
			e.log.Error("outbound: claiming from the queue", "err", err)
		}
		select {
		case <-ctx.Done():
			e.wg.Wait()
			e.mu.Lock()
			for _, d := range e.dests {
				for _, dl := range d.pending {
					e.q.Unclaim(dl.job.ID, addrs(dl.rcpts))
				}
				d.pending = nil
			}
			e.mu.Unlock()
			return nil
		case <-e.q.Wake():
		case <-tick.C:
		case <-e.freed:
		}
	}
}

// fill claims due recipients while there is room, and starts workers.
func (e *Engine) fill(ctx context.Context) error {
	e.mu.Lock()
	room := e.opts.MaxInFlight - e.inflight
	e.mu.Unlock()
	if room <= 0 {
		return nil
	}
	jobs, err := e.q.Claim(e.now(), room)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, j := range jobs {
		byDest := map[string][]queue.Recipient{}
		var order []string
		for _, r := range j.Rcpts {
			name := "[relay]"
			if e.relay.name == "" {
				name = domainOf(r.Addr)
			}
			if _, ok := byDest[name]; !ok {
				order = append(order, name)
			}
			byDest[name] = append(byDest[name], r)
		}
		for _, name := range order {
			d := e.dests[name]
			if d == nil {
				d = &dest{name: name, limit: e.opts.InitialConcurrency}
				e.dests[name] = d
			}
			d.pending = append(d.pending, &delivery{job: j, rcpts: byDest[name]})
			e.inflight++
		}
	}
	for _, d := range e.dests {
		for d.workers < d.limit && d.workers < len(d.pending) {
			d.workers++
			e.wg.Add(1)
			go e.worker(ctx, d)
		}
	}
	return nil
}

// take gives a worker the next delivery of its destination, or ends the
// worker (nil) when there is none or the destination has more workers than
// its limit now allows.
func (e *Engine) take(d *dest) *delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(d.pending) == 0 || d.workers > d.limit {
		d.workers--
		if d.workers == 0 && len(d.pending) == 0 {
			delete(e.dests, d.name)
		}
		return nil
	}
	if ok, wait := e.rate.take(d.name, true, e.now()); !ok {
		// Over the destination's rate: this worker ends, and the engine
		// looks again when the next message may go.
		d.workers--
		e.wakeIn(wait)
		e.log.Debug("outbound: destination rate limit reached", "destination", d.name, "wait", wait)
		return nil
	}
	dl := d.pending[0]
	d.pending = d.pending[1:]
	return dl
}

// worker delivers the destination's pending messages over one connection
// at a time, several messages per connection.
func (e *Engine) worker(ctx context.Context, d *dest) {
	defer e.wg.Done()
	var s *session
	sent := 0
	defer func() {
		if s != nil {
			s.quit()
		}
	}()
	for {
		if ctx.Err() != nil {
			e.mu.Lock()
			d.workers--
			e.mu.Unlock()
			return
		}
		dl := e.take(d)
		if dl == nil {
			return
		}
		if s != nil && (s.dead || sent >= e.opts.MaxPerConnection) {
			s.quit()
			s = nil
		}
		if s == nil {
			var rerr *routeError
			s, rerr = e.connect(ctx, routeDomain(d, dl))
			sent = 0
			if rerr != nil {
				if ctx.Err() != nil {
					e.unclaim(dl)
					continue
				}
				e.adapt(d, false, true)
				// The destination's other waiting messages would fail
				// the same way now: they share this attempt.
				// One log line for all of them, not one per recipient
				// (written before their results are recorded).
				all := append([]*delivery{dl}, e.drain(d)...)
				result := queue.Deferred
				if rerr.Permanent {
					result = queue.Bounced
				}
				e.log.Info("outbound delivery", "destination", d.name, "messages", len(all), "result", result.String(), "reply", rerr.Error())
				for _, o := range all {
					e.finish(ctx, o, e.failAll(o, rerr), slog.LevelDebug)
				}
				continue
			}
		}
		if ok, wait := e.rate.take(strings.ToLower(strings.TrimSuffix(s.host, ".")), false, e.now()); !ok {
			// Over the MX host's own rate: the message goes back to the
			// front of the line and this worker ends.
			e.putBack(d, dl)
			e.wakeIn(wait)
			e.log.Debug("outbound: MX host rate limit reached", "destination", d.name, "host", s.host, "wait", wait)
			return
		}
		outcomes, rate := e.deliver(ctx, s, dl)
		sent++
		if ctx.Err() != nil && s.dead {
			e.unclaim(dl)
			continue
		}
		e.adapt(d, delivered(outcomes), rate)
		e.finish(ctx, dl, outcomes, slog.LevelInfo)
		if !s.dead {
			s.reset()
		}
	}
}

// putBack returns a delivery to the front of d's line and ends the
// calling worker.
func (e *Engine) putBack(d *dest, dl *delivery) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d.pending = append([]*delivery{dl}, d.pending...)
	d.workers--
}

// wakeIn makes Run look for work again after wait (a rate limit's
// next slot), keeping one timer for the earliest such time.
func (e *Engine) wakeIn(wait time.Duration) {
	e.wakeMu.Lock()
	defer e.wakeMu.Unlock()
	at := time.Now().Add(wait)
	if e.wakeT != nil && !e.wakeAt.After(at) && e.wakeAt.After(time.Now()) {
		return
	}
	if e.wakeT != nil {
		e.wakeT.Stop()
	}
	e.wakeAt = at
	e.wakeT = time.AfterFunc(wait, func() {
		select {
		case e.freed <- struct{}{}:
		default:
		}
	})
}

// drain takes every waiting delivery of d.
func (e *Engine) drain(d *dest) []*delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := d.pending
	d.pending = nil
	return out
}

func routeDomain(d *dest, dl *delivery) string {
	if d.name == "[relay]" {
		return ""
	}
	return d.name
}

func (e *Engine) unclaim(dl *delivery) {
	e.q.Unclaim(dl.job.ID, addrs(dl.rcpts))
	e.release()
}

func (e *Engine) release() {
	e.mu.Lock()
	e.inflight--
	e.mu.Unlock()
	select {
	case e.freed <- struct{}{}:
	default:
	}
}

// adapt moves the destination's concurrency limit: up by one after as
// many successes as the limit, down by one on a rate-limit reply or a
// failed connection.
func (e *Engine) adapt(d *dest, success, slowDown bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case slowDown:
		if d.limit > 1 {
			d.limit--
			e.log.Info("outbound: destination concurrency lowered", "destination", d.name, "limit", d.limit)
		}
		d.successes = 0
	case success:
		d.successes++
		if d.successes >= d.limit && d.limit < e.opts.MaxConcurrency {
			d.limit++
			d.successes = 0
		}
	}
}

// outcome is the result of an attempt for one recipient.
type outcome struct {
	rcpt      queue.Recipient
	status    queue.Status // Delivered, Bounced or Deferred (before lifetime)
	reply     string       // the remote reply or our reason
	remoteMTA string       // the host that answered, if any
}

func delivered(os []outcome) bool {
	for _, o := range os {
		if o.status == queue.Delivered {
			return true
		}
	}
	return false
}

func (e *Engine) failAll(dl *delivery, rerr *routeError) []outcome {
	st := queue.Deferred
	if rerr.Permanent {
		st = queue.Bounced
	}
	out := make([]outcome, len(dl.rcpts))
	for i, r := range dl.rcpts {
		out[i] = outcome{rcpt: r, status: st, reply: rerr.Error()}
	}
	return out
}

// finish turns outcomes into queue results (backoff, lifetime), sends the
// DSN for bounces and records the results.
func (e *Engine) finish(ctx context.Context, dl *delivery, outs []outcome, lvl slog.Level) {
	defer e.release()
	now := e.now()
	results := make([]queue.Result, len(outs))
	var bounced []outcome
	for i, o := range outs {
		res := queue.Result{Rcpt: o.rcpt.Addr, Status: o.status, Reply: o.reply}
		if o.status == queue.Deferred {
			if now.Sub(dl.job.Envelope.Received) >= e.opts.Lifetime {
				// RFC 3463 4.4.7: delivery time expired.
				res.Status = queue.Bounced
				res.Reply = "4.4.7 message expired after " + e.opts.Lifetime.String() + " in the queue; last error: " + o.reply
				outs[i].reply = res.Reply
			} else {
				res.Next = now.Add(e.backoff(o.rcpt.Attempts))
			}
		}
		if res.Status == queue.Bounced {
			outs[i].status = queue.Bounced
			bounced = append(bounced, outs[i])
		}
		results[i] = res
		e.log.Log(ctx, lvl, "outbound delivery", "id", dl.job.ID, "rcpt", o.rcpt.Addr, "result", res.Status.String(),
			"attempt", o.rcpt.Attempts+1, "mta", o.remoteMTA, "reply", res.Reply)
	}
	if len(bounced) > 0 {
		e.bounce(ctx, dl, bounced, now)
	}
	if e.delayNotice(ctx, dl, outs, now) {
		for i := range results {
			results[i].DelayNotified = true
		}
	}
	// The update must land even while shutting down: it records what the
	// peer already accepted.
	if err := e.q.Update(context.WithoutCancel(ctx), dl.job.ID, results); err != nil && !errors.Is(err, queue.ErrNotFound) {
		// (Not found: the operator deleted it meanwhile.)
		e.log.Error("outbound: recording delivery results", "id", dl.job.ID, "err", err)
	}
}

// backoff is the wait before attempt n+1 after n failed attempts: RetryMin
// doubling up to RetryMax, with ±10% jitter so that deferred mail does not
// come back in waves.
func (e *Engine) backoff(attempts int) time.Duration {
	d := e.opts.RetryMin
	for range attempts {
		d *= 2
		if d >= e.opts.RetryMax {
			d = e.opts.RetryMax
			break
		}
	}
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

func (e *Engine) bounce(ctx context.Context, dl *delivery, bounced []outcome, now time.Time) {
	env := dl.job.Envelope
	if env.From == "" {
		// RFC 5321 6.1 / RFC 3464: never a bounce to the null sender.
		e.log.Info("outbound: bounce of a null-sender message dropped", "id", dl.job.ID)
		return
	}
	msg, err := e.buildDSN(dl, bounced, now, dsnFailed)
	if err != nil {
		e.log.Error("outbound: building DSN", "id", dl.job.ID, "err", err)
		return
	}
	if err := e.opts.Bounce(context.WithoutCancel(ctx), env.From, msg); err != nil {
		e.log.Error("outbound: delivering DSN", "id", dl.job.ID, "to", env.From, "err", err)
	}
}

// delayNotice sends the message's one delay notice (RFC 3464 Action:
// delayed) when it has been in the queue for DelayNotice and some
// recipients are still deferred, and says whether it did. Never to the
// null sender (RFC 3464 / RFC 5321 6.1).
func (e *Engine) delayNotice(ctx context.Context, dl *delivery, outs []outcome, now time.Time) bool {
	env := dl.job.Envelope
	if e.opts.DelayNotice <= 0 || env.From == "" || now.Sub(env.Received) < e.opts.DelayNotice {
		return false
	}
	var delayed []outcome
	for _, o := range outs {
		if o.status == queue.Deferred {
			delayed = append(delayed, o)
		}
	}
	if len(delayed) == 0 || dl.job.DelayNotified || !e.noticeOnce(dl.job.ID, true) {
		return false
	}
	msg, err := e.buildDSN(dl, delayed, now, dsnDelayed)
	if err == nil {
		err = e.opts.Bounce(context.WithoutCancel(ctx), env.From, msg)
	}
	if err != nil {
		e.log.Error("outbound: delivering the delay notice", "id", dl.job.ID, "to", env.From, "err", err)
		e.noticeOnce(dl.job.ID, false) // tried again after the next attempt
		return false
	}
	e.log.Info("outbound: delay notice sent", "id", dl.job.ID, "to", env.From, "recipients", len(delayed))
	return true
}

// noticeOnce marks (set) or unmarks a message as having had its delay
// notice in this run, and says whether set changed anything. The queue
// records it durably (Result.DelayNotified), but deliveries of one message
// to several destinations, claimed before that record lands, need this to
// agree. Bounded: when full it is cleared, and the queue's record serves.
func (e *Engine) noticeOnce(id string, set bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !set {
		delete(e.noticed, id)
		return true
	}
	if e.noticed[id] {
		return false
	}
	if len(e.noticed) >= maxNoticed {
		clear(e.noticed)
	}
	e.noticed[id] = true
	return true
}

func addrs(rs []queue.Recipient) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Addr
	}
	return out
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	return strings.ToLower(addr[i+1:])
}
