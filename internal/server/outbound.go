package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/mtasts"
	"github.com/agua-mail/agua/internal/outbound"
	"github.com/agua-mail/agua/internal/pgqueue"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuehttp"
	"github.com/agua-mail/agua/internal/resolver"
	"github.com/agua-mail/agua/internal/router"
	"github.com/agua-mail/agua/internal/srs"
)

// outboundParts is delivery to other servers as `agua serve` runs it: the
// queue (in <data_dir>/queue, or on PostgreSQL with [postgres] queue), the
// DKIM signer on <data_dir>/dkim, and the engine that delivers from the
// queue.
type outboundParts struct {
	queue  queue.Queue
	signer *dkim.Signer
	engine *outbound.Engine
	local  router.Target      // where DSNs for local senders go
	res    *resolver.Resolver // shared with the inbound sender checks
	srs    *srs.SRS           // forwarding's sender rewriting, keyed by <data_dir>/srs.key

	stop    chan struct{} // closed to stop the engine
	done    chan struct{} // closed when it has stopped
	running bool
}

// openOutbound opens the queue, the resolver and the DKIM signer (watching
// its key folder) and prepares the engine; Serve starts it. local is the
// local delivery target, which receives the DSNs for local senders.
func (s *Server) openOutbound(local router.Target) (err error) {
	cfg := s.cfg
	o := &outboundParts{local: local, stop: make(chan struct{}), done: make(chan struct{})}
	s.out = o
	if o.queue, err = s.openQueue(); err != nil {
		return fmt.Errorf("outbound queue: %w", err)
	}
	secret, err := srs.LoadOrCreateSecret(filepath.Join(cfg.DataDir, "srs.key"))
	if err != nil {
		return fmt.Errorf("srs secret: %w", err)
	}
	if o.srs, err = srs.New(secret, int(cfg.Outbound.SRSMaxAge/(24*time.Hour)), nil); err != nil {
		return err
	}
	o.signer = dkim.NewSigner(dkim.Options{DataDir: cfg.DataDir, Log: s.log})
	if err := o.signer.Watch(); err != nil {
		return err
	}
	opts, err := OutboundOptions(cfg)
	if err != nil {
		return err
	}
	rc := ResolverConfig(cfg)
	res, err := resolver.New(rc)
	if err != nil {
		// No dns.resolver and no usable /etc/resolv.conf: the server
		// still serves; outgoing mail waits in the queue (DNS lookups fail
		// temporarily) until a resolver answers on the local host.
		s.log.Warn("no DNS resolver configured or found; outgoing mail waits in the queue (set dns.resolver)", "err", err)
		rc.Servers = []string{"127.0.0.1:53"}
		if res, err = resolver.New(rc); err != nil {
			return fmt.Errorf("dns: %w", err)
		}
	}
	opts.Resolver = res
	o.res = res
	if cfg.Outbound.MTASTS {
		if opts.MTASTS, err = mtasts.New(mtasts.Options{
			TXT: mtasts.TXTLookup(res), Dial: resolverDial(res, opts.SourceIP),
			Dir: cfg.DataDir, MaxEntries: cfg.Outbound.MTASTSCacheSize, Logger: s.log,
		}); err != nil {
			return fmt.Errorf("mta-sts: %w", err)
		}
	}
	opts.Queue, opts.Logger, opts.Bounce, opts.Observe = o.queue, s.log, s.bounce, s.observeDelivery
	// Deferred mail is looked for at least as often as the shortest
	// retry interval, so a short retry_min (labs, tests) is honoured.
	opts.Poll = min(30*time.Second, cfg.Outbound.RetryMin)
	if o.engine, err = outbound.New(opts); err != nil {
		return err
	}
	return nil
}

// openQueue opens the outbound queue: on PostgreSQL, shared with the
// other nodes, when [postgres] queue says so; else the file queue.
func (s *Server) openQueue() (queue.Queue, error) {
	if s.cfg.Postgres.Queue {
		q, err := pgqueue.New(s.pg, pgqueue.Options{Logger: s.log})
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return q, nil
	}
	o := QueueOptions(s.cfg)
	o.Logger = s.log
	q, err := queue.Open(QueueDir(s.cfg), o)
	if err != nil {
		return nil, err
	}
	return q, nil
}

// resolverDial connects to a host name through agua's resolver
// (dns.resolver), not the system's: the MTA-STS policy host is found the way
// the MX hosts are.
func resolverDial(res *resolver.Resolver, source netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, _, err := res.IP(ctx, host)
		if err != nil {
			return nil, err
		}
		d := net.Dialer{Timeout: 30 * time.Second}
		if source.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
		}
		last := fmt.Errorf("%s has no address records", host)
		for _, ip := range ips {
			if source.IsValid() && ip.Is4() != source.Is4() {
				continue
			}
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
}

// remote is the router's remote target: sign with DKIM, then queue.
func (o *outboundParts) remote() router.Target {
	return router.NewOutbound(o.queue.Begin, o.sign)
}

// sign signs a message from a local domain; one whose header section
// cannot be parsed goes out unsigned (the receiver judges it as any
// unsigned mail) rather than not at all.
func (o *outboundParts) sign(envFrom string, msg []byte) ([]byte, error) {
	sig, err := o.signer.Sign(envFrom, msg)
	if errors.Is(err, dkim.ErrMalformed) {
		return nil, nil
	}
	return sig, err
}

// start runs the engine until stop.
func (o *outboundParts) start() {
	o.running = true
	go func() {
		defer close(o.done)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-o.stop
			cancel()
		}()
		o.engine.Run(ctx)
	}()
}

// stop ends the engine: sessions in progress are interrupted and their
// recipients stay in the queue for the next start.
func (o *outboundParts) stopEngine() {
	if o.running {
		o.running = false
		close(o.stop)
		<-o.done
	}
}

// adminHandler is the queue on the admin API (/v1/queue).
func (o *outboundParts) adminHandler() http.Handler { return queuehttp.Handler(o.queue) }

// close stops the engine if it runs and releases the queue and signer.
func (o *outboundParts) close() error {
	o.stopEngine()
	var errs []error
	if o.signer != nil {
		errs = append(errs, o.signer.Close())
	}
	if o.queue != nil {
		errs = append(errs, o.queue.Close())
	}
	return errors.Join(errs...)
}

// bounce delivers a DSN (RFC 3464) to rcpt, the sender of a message that
// failed. A local sender gets it in their mailbox through the local target
// (Return-Path: <>); any other is queued with the null reverse-path
// (RFC 5321 4.5.5), which never bounces again. The sender of a forwarded
// message is an SRS address of ours: it is reversed first, so the DSN goes
// to the original sender.
func (s *Server) bounce(ctx context.Context, rcpt string, dsn []byte) error {
	// An SRS1 address reverses to the first forwarder's SRS0 address,
	// reversed here too when that forwarder is this server.
	for i := range 2 {
		if !srs.IsSRS(rcpt) {
			break
		}
		orig, err := s.out.srs.Reverse(rcpt)
		if err != nil && i == 0 {
			return fmt.Errorf("DSN to %s: %w", rcpt, err)
		}
		if err != nil {
			break // another forwarder's SRS0 address: it goes there
		}
		rcpt = orig
	}
	users, err := s.dir.Resolve(ctx, rcpt)
	switch {
	case errors.Is(err, accounts.ErrNotLocal):
		_, err := s.out.queue.Enqueue(ctx, queue.Envelope{From: "", To: []string{rcpt}}, bytes.NewReader(dsn))
		return err
	case err != nil:
		return err
	}
	env := router.Envelope{From: ""}
	var forward []string
	for _, u := range users {
		if u.Forward {
			forward = append(forward, u.Address)
			continue
		}
		env.Rcpts = append(env.Rcpts, router.Recipient{Address: u.Address, Quota: u.Quota})
	}
	if len(forward) > 0 {
		if _, err := s.out.queue.Enqueue(ctx, queue.Envelope{From: "", To: forward}, bytes.NewReader(dsn)); err != nil {
			return err
		}
	}
	if len(env.Rcpts) == 0 {
		return nil
	}
	return s.out.local.Deliver(ctx, env, bytes.NewReader(dsn), int64(len(dsn)))
}
