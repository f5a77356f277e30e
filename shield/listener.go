package shield

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// ListenerConfig configures one wrapped listener.
type ListenerConfig struct {
	Name          string                       // "smtp", "submission", "pop3", "admin" ...: used in logs, stats and Decide
	MaxConns      int                          // ceiling of concurrent connections on this listener; 0 = Config.Limits.MaxConns (never unlimited)
	Reject        func(c net.Conn, d Decision) // writes a short protocol-correct refusal; the shield sets a write deadline (Limits.RejectTimeout) before and closes after; nil = close silently
	ProxyProtocol bool                         // accept PROXY v1/v2 headers, only from Config.TrustedProxies; other peers' bytes are left untouched
}

// listenerStats are the counters of one listener or middleware name.
type listenerStats struct {
	accepted, rejected, dropped, tarpitted, evicted atomic.Uint64
}

// listener is a shield-wrapped net.Listener.
type listener struct {
	s        *Shield
	inner    net.Listener
	lc       ListenerConfig
	max      atomic.Int64 // lc.MaxConns, or Config.Limits.MaxConns; set again by Reconfigure
	reserved atomic.Int64 // max × Config.ReservedKnownGood
	stats    *listenerStats
	active   atomic.Int64

	mu    sync.Mutex
	conns map[*Conn]struct{}
	fair  *fairShares // contestable connections by network, for fair capacity
	// untrusted are the contestable connections whose client's
	// reputation is untrusted: evicted first (score.go).
	untrusted map[*Conn]struct{}

	start   sync.Once
	loops   sync.WaitGroup    // the accept loops
	ch      chan acceptResult // admitted connections waiting for Accept (acceptBuffer)
	done    chan struct{}
	closeMu sync.Once
}

type acceptResult struct {
	c   *Conn
	err error
	raw net.Conn // multiListener.Accept
}

// Listener wraps inner. Accept decides before it returns, before any TLS or
// banner: refused connections are answered, dropped or tarpitted inside and
// never returned. Admitted connections are *Conn.
func (s *Shield) Listener(inner net.Listener, lc ListenerConfig) net.Listener {
	if lc.Name == "" {
		lc.Name = inner.Addr().String()
	}
	l := &listener{
		s:         s,
		inner:     inner,
		lc:        lc,
		stats:     s.statsFor(lc.Name),
		conns:     make(map[*Conn]struct{}),
		fair:      newFairShares(),
		untrusted: make(map[*Conn]struct{}),
		ch:        make(chan acceptResult, acceptBuffer),
		done:      make(chan struct{}),
	}
	l.setCapacity(s.cfg())
	s.lnMu.Lock()
	s.listeners = append(s.listeners, l)
	s.lnMu.Unlock()
	return l
}

// listenerByName returns the first listener with that name, or nil.
func (s *Shield) listenerByName(name string) *listener {
	if name == "" {
		return nil
	}
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	for _, l := range s.listeners {
		if l.lc.Name == name {
			return l
		}
	}
	return nil
}

// ceiling is how many connections may be open when a client of this kind
// arrives: known-good clients may use the reserved share.
func (l *listener) ceiling(knownGood bool) int {
	if knownGood {
		return int(l.max.Load())
	}
	return int(l.max.Load() - l.reserved.Load())
}

// setCapacity sets the ceiling and the known-good reserve from cfg.
func (l *listener) setCapacity(cfg *Config) {
	m := l.lc.MaxConns
	if m <= 0 {
		m = cfg.Limits.MaxConns
	}
	l.max.Store(int64(m))
	l.reserved.Store(int64(float64(m) * cfg.ReservedKnownGood))
}

// take claims a listener slot if below the ceiling.
func (l *listener) take(knownGood bool) bool {
	limit := int64(l.ceiling(knownGood))
	for {
		n := l.active.Load()
		if n >= limit {
			return false
		}
		if l.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (l *listener) Addr() net.Addr { return l.inner.Addr() }

func (l *listener) Close() error {
	first := false
	l.closeMu.Do(func() { close(l.done); first = true })
	err := l.inner.Close()
	if first {
		// Connections admitted but never taken by Accept are closed once
		// the loops have stopped adding any.
		go func() {
			l.loops.Wait()
			for {
				select {
				case r := <-l.ch:
					if r.c != nil {
						r.c.Close()
					}
				default:
					return
				}
			}
		}()
	}
	return err
}

func (l *listener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		// Each accept socket (Shield.Listen binds several) gets its
		// share of the accept goroutines, at least one.
		socks := acceptSockets(l.inner)
		for _, k := range socks {
			for range max(1, acceptLoops()/len(socks)) {
				l.loops.Add(1)
				go l.loop(k)
			}
		}
	})
	select {
	case r := <-l.ch:
		if r.err != nil {
			return nil, r.err
		}
		return r.c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// acceptLoops is how many goroutines accept from one listener. Under a
// connection flood the kernel's accept queue fills faster than one
// goroutine empties it on a busy machine, and a full queue drops SYNs of
// legitimate clients too; accept(2) is safe to call concurrently.
func acceptLoops() int { return max(2, runtime.GOMAXPROCS(0)) }

// acceptBuffer is how many admitted connections may wait for Accept. The
// accept loops hand connections over without waiting for Accept's caller,
// so each time a loop runs it empties the kernel's accept queue (accept(2)
// until it would block). Handing over through an unbuffered channel took
// one connection per turn of two goroutines, and on a loaded machine those
// turns are slow: a connect flood overflowed the kernel queue
// (TcpExtListenOverflows), which costs every client a SYN retry. Each
// waiting connection already holds its listener slot, so max_conns still
// bounds them; refusals never wait here. Kept small against max_conns: a
// waiting connection cannot be evicted for a newcomer (it is not an idle
// session yet), and with 1024 a full-speed connect flood (14,000/s) kept
// the default 1000-connection listener full of waiting attackers, so 1–4%
// of legitimate strangers got 421 at the banner (compare/compare.sh,
// 2026-12-06); 64 still drains the kernel queue (0 overflows measured).
const acceptBuffer = 64

// acceptRetryMax bounds the pause of an accept loop after accept(2) failed
// (e.g. out of file descriptors), so a lasting failure neither spins nor
// fills the buffer with errors.
const acceptRetryMax = time.Second

// loop accepts from the inner listener and hands admitted connections to
// Accept. Refusals are handled here without ever waiting on a client.
func (l *listener) loop(inner net.Listener) {
	defer l.loops.Done()
	var pause time.Duration
	for {
		c, err := inner.Accept()
		if err != nil {
			select {
			case l.ch <- acceptResult{err: err}:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), acceptRetryMax)
			select {
			case <-time.After(pause):
			case <-l.done:
				return
			}
			continue
		}
		pause = 0
		addr := addrOf(c.RemoteAddr())
		if l.lc.ProxyProtocol && l.s.pol.Load().trusted.Lookup(addr) {
			go l.proxied(c)
			continue
		}
		l.admit(c, addr, nil, nil)
	}
}

// proxied reads a PROXY header from a trusted proxy and admits the client
// it names.
func (l *listener) proxied(c net.Conn) {
	br := bufio.NewReaderSize(c, 256)
	h, err := proxyproto.ReadHeaderTimeout(c, br, l.s.cfg().Limits.ProxyTimeout)
	addr := addrOf(c.RemoteAddr())
	var remote net.Addr
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		// The proxy's own connection (e.g. a health check): judge the proxy.
	case err != nil:
		l.s.agg.add(hostPrefix(addr), "proxy:bad_header", Drop, false)
		l.stats.dropped.Add(1)
		c.Close()
		return
	case h.Command.IsProxy():
		if src, ok := h.SourceAddr.(*net.TCPAddr); ok {
			addr = unmap(src.AddrPort().Addr())
			remote = src
		}
	}
	l.admit(c, addr, remote, br)
}

// admit decides on c and either hands it to Accept or handles the refusal.
func (l *listener) admit(c net.Conn, addr netip.Addr, remote net.Addr, r *bufio.Reader) {
	s := l.s
	now := s.now()
	d, release, class := s.admit(l, addr, now)
	knownGood := class == Trusted
	if d.Action != Allow {
		if remote != nil {
			c = &proxiedConn{Conn: c, remote: remote} // so Reject sees the client
		}
		l.refuse(c, addr, d)
		return
	}
	s.act.admitted(addr, knownGood)
	sc := &Conn{Conn: c, s: s, l: l, addr: addr, remote: remote, since: now, release: release,
		id: s.connIDs.Add(1)}
	sc.knownGood.Store(knownGood)
	if r != nil && r.Buffered() > 0 {
		sc.r = r
	}
	sc.lastActive.Store(now.UnixNano())
	l.mu.Lock()
	l.conns[sc] = struct{}{}
	if !knownGood { // allowlisted and trusted clients are known-good here too
		l.fair.add(sc)
		if class == Untrusted {
			l.untrusted[sc] = struct{}{}
		}
	}
	l.mu.Unlock()
	select {
	case l.ch <- acceptResult{c: sc}:
		l.stats.accepted.Add(1)
	case <-l.done:
		sc.Close()
	}
}

// refuse carries out a refusal: reject, drop or tarpit.
func (l *listener) refuse(c net.Conn, addr netip.Addr, d Decision) {
	s := l.s
	agg := hostPrefix(addr)
	if d.Source == "limit:per_prefix_conns" || d.Source == "limit:per_prefix_rate" {
		agg = s.netPrefix(addr)
	}
	action := d.Action
	if action == Tarpit && !s.holdTarpit(c) {
		action = Drop
	}
	if action == Reject && (l.lc.Reject == nil || s.pendingRejects.Add(1) > int64(s.cfg().Limits.MaxPendingRejects)) {
		if l.lc.Reject != nil {
			s.pendingRejects.Add(-1)
		}
		action = Drop
	}
	s.agg.add(agg, d.Source, action, false)
	switch action {
	case Reject:
		l.stats.rejected.Add(1)
		go func() {
			defer s.pendingRejects.Add(-1)
			defer c.Close()
			defer func() {
				// A bug in a Reject callback must not take the server down.
				if v := recover(); v != nil {
					s.log.Error("shield reject callback panicked", "listener", l.lc.Name, "panic", v, "stack", string(debug.Stack()))
				}
			}()
			c.SetWriteDeadline(time.Now().Add(s.cfg().Limits.RejectTimeout))
			c.SetReadDeadline(time.Now().Add(s.cfg().Limits.RejectTimeout))
			l.lc.Reject(c, d)
			// Closing with unread client data would reset the connection,
			// and some stacks then discard the refusal. Half-close and
			// drain a little first (lingering close), within the deadline.
			if cw, ok := underlying(c).(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				io.CopyN(io.Discard, c, 4096)
			}
		}()
	case Tarpit:
		l.stats.tarpitted.Add(1)
	default:
		l.stats.dropped.Add(1)
		dropConn(c)
	}
}

// proxiedConn is a refused connection from a trusted proxy, showing the
// client's address.
type proxiedConn struct {
	net.Conn
	remote net.Addr
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }
func (c *proxiedConn) NetConn() net.Conn    { return c.Conn }

// dropConn closes c at once. On TCP it resets the connection (linger 0) so
// a flood of dropped clients leaves no TIME_WAIT state behind.
func dropConn(c net.Conn) {
	if tc, ok := underlying(c).(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// tarpitConn is one held connection.
type tarpitConn struct{ c net.Conn }

// holdTarpit holds c silently until TarpitHold, reading and discarding.
// It returns false when TarpitMaxHeld connections are already held.
func (s *Shield) holdTarpit(c net.Conn) bool {
	if s.tarpitHeld.Add(1) > int64(s.cfg().TarpitMaxHeld) {
		s.tarpitHeld.Add(-1)
		return false
	}
	t := &tarpitConn{c: c}
	s.tarpitMu.Lock()
	s.tarpits[t] = struct{}{}
	s.tarpitMu.Unlock()
	go func() {
		defer func() {
			s.tarpitMu.Lock()
			delete(s.tarpits, t)
			s.tarpitMu.Unlock()
			s.tarpitHeld.Add(-1)
			dropConn(c)
		}()
		// Socket deadlines run on the real clock.
		c.SetReadDeadline(time.Now().Add(s.cfg().TarpitHold))
		var buf [128]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return
			}
		}
	}()
	return true
}

// addrOf returns the unmapped IP of a net.Addr, or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return unmap(a.AddrPort().Addr())
	case *net.UDPAddr:
		return unmap(a.AddrPort().Addr())
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return unmap(ap.Addr())
}

// Conn is an admitted connection. RemoteAddr returns the real client, after
// the PROXY protocol.
type Conn struct {
	net.Conn
	s         *Shield
	l         *listener
	id        uint64
	addr      netip.Addr
	remote    net.Addr // client address from a PROXY header, or nil
	r         *bufio.Reader
	since     time.Time
	knownGood atomic.Bool // known-good when admitted, or since (AuthSuccess, MessageAccepted)

	lastActive atomic.Int64
	authed     atomic.Bool
	gateTurns  atomic.Uint32 // slots this connection got from a Gate (gate.go: repeat deliveries)

	// Fair capacity (fair.go), guarded by l.mu: the leaf network counting
	// this connection while it is contestable, and its place in the leaf's
	// CLOCK list.
	fairLeaf  *fairNode
	fairLinks links[Conn]

	release   func()
	relOnce   sync.Once
	closeOnce sync.Once
	doneOnce  sync.Once
	onDoneMu  sync.Mutex    // guards the three below
	kicked    bool          // the shield wants it gone
	done      chan struct{} // Done's, made when asked for: most connections never are
	onDone    func()        // OnDone's
}

func (c *Conn) links() *links[Conn] { return &c.fairLinks }

// Addr returns the client's address, unmapped (IPv4-mapped IPv6 as IPv4).
func (c *Conn) Addr() netip.Addr { return c.addr }

// ID returns the connection's number, unique within the Shield, for logs.
func (c *Conn) ID() uint64 { return c.id }

// Listener returns the name of the listener that accepted the connection.
func (c *Conn) Listener() string { return c.l.lc.Name }

// Authenticated reports whether ReportAuth succeeded on this connection.
func (c *Conn) Authenticated() bool { return c.authed.Load() }

// RemoteAddr returns the client's address: from the PROXY header when a
// trusted proxy sent one.
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// Allowlisted reports whether the client is allowlisted or a trusted proxy
// under the rules in force: never limited or banned, and a relay the
// service may trust (a mail server skips its sender checks).
func (c *Conn) Allowlisted() bool { return c.s.pol.Load().exempt(c.addr) }

// KnownGood reports whether the client is known-good: when admitted (and
// not untrusted by the Reputation), or since (a behaviour with KnownGood,
// such as an accepted message or a DNSWL hit).
func (c *Conn) KnownGood() bool { return c.knownGood.Load() }

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read reads from the client and records activity for idle eviction.
func (c *Conn) Read(b []byte) (int, error) {
	var n int
	var err error
	if c.r != nil {
		n, err = c.r.Read(b)
		if err == nil && c.r.Buffered() == 0 {
			c.r = nil
		}
	} else {
		n, err = c.Conn.Read(b)
	}
	if n > 0 {
		c.lastActive.Store(c.s.now().UnixNano())
	}
	return n, err
}

// Close closes the connection and releases its slots exactly once.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		c.onDoneMu.Lock()
		if c.kicked {
			err = nil // the shield closed it already
		}
		c.onDoneMu.Unlock()
		c.unregister()
	})
	return err
}

// unregister releases the slots and forgets the connection, once.
func (c *Conn) unregister() {
	c.relOnce.Do(func() {
		if c.release != nil {
			c.release()
		}
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.fair.remove(c)
		delete(c.l.untrusted, c)
		c.l.mu.Unlock()
	})
}

// uncontested takes c out of fair capacity's contest: it authenticated or
// became known-good, and is never evicted to make room.
func (c *Conn) uncontested() {
	c.l.mu.Lock()
	c.l.fair.remove(c)
	delete(c.l.untrusted, c)
	c.l.mu.Unlock()
}

// markUntrusted makes c, if still contestable, one of the first evicted:
// its client's reputation became untrusted during the connection.
func (l *listener) markUntrusted(c *Conn) {
	l.mu.Lock()
	if c.fairLeaf != nil {
		l.untrusted[c] = struct{}{}
	}
	l.mu.Unlock()
}

// kick is the shield closing the connection: Done is closed, the socket
// closed and the slots released.
func (c *Conn) kick() {
	c.doneOnce.Do(func() {
		c.onDoneMu.Lock()
		c.kicked = true
		if c.done != nil {
			close(c.done)
		}
		f := c.onDone
		c.onDone = nil
		c.onDoneMu.Unlock()
		if f != nil {
			go f()
		}
	})
	c.Conn.Close()
	c.unregister()
}

// Done is closed when the shield wants this connection gone: its address was
// newly denied by a reloaded rule (CloseOnDeny), banned, evicted to make
// room, or locked out. The socket is closed too.
func (c *Conn) Done() <-chan struct{} {
	c.onDoneMu.Lock()
	defer c.onDoneMu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.kicked {
			close(c.done)
		}
	}
	return c.done
}

// OnDone has f run, in a goroutine of its own, when the shield wants this
// connection gone (when Done is closed), or at once if it does already: a
// service that only needs to end its session then spares itself a
// goroutine per connection waiting on Done. A connection holds one such
// function; OnDone(nil) forgets it (the session ended first).
func (c *Conn) OnDone(f func()) {
	c.onDoneMu.Lock()
	if c.kicked {
		c.onDoneMu.Unlock()
		if f != nil {
			go f()
		}
		return
	}
	c.onDone = f
	c.onDoneMu.Unlock()
}

// Report records a behaviour of this connection's client. If the decision's
// Action is not Allow the caller answers (Temporary: a 421-style temporary
// refusal) and closes.
func (c *Conn) Report(ev Event) Decision {
	if ev == AuthSuccess && !c.authed.Swap(true) {
		c.uncontested()
	}
	return c.s.report(c, c.addr, ev, c.s.now())
}

// ReportAuth records a login attempt on account: AuthFailure or AuthSuccess
// for the address, plus per-account failure tracking for AccountDelay. A
// success marks the connection authenticated.
func (c *Conn) ReportAuth(account string, ok bool) Decision {
	now := c.s.now()
	if ok {
		d := c.Report(AuthSuccess)
		if d.Action == Allow {
			c.s.markOwner(account, c.addr, now)
		}
		return d
	}
	c.s.reportAccount(account, c.addr, now)
	return c.Report(AuthFailure)
}

// FromConn returns the shield connection beneath c (unwrapping *tls.Conn
// and any wrapper with a NetConn method), or nil.
func FromConn(c net.Conn) *Conn {
	for range 8 {
		switch x := c.(type) {
		case *Conn:
			return x
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Report records ev for the client of c; a no-op Allow when c did not come
// from a shield listener.
func Report(c net.Conn, ev Event) Decision {
	if sc := FromConn(c); sc != nil {
		return sc.Report(ev)
	}
	return allow
}

// Allowlisted is Conn.Allowlisted for any net.Conn; false when c did not
// come from a shield listener.
func Allowlisted(c net.Conn) bool {
	sc := FromConn(c)
	return sc != nil && sc.Allowlisted()
}

// KnownGood is Conn.KnownGood for any net.Conn; false when c did not come
// from a shield listener.
func KnownGood(c net.Conn) bool {
	sc := FromConn(c)
	return sc != nil && sc.KnownGood()
}

// ReportAuth is Conn.ReportAuth for any net.Conn; a no-op Allow when c did
// not come from a shield listener.
func ReportAuth(c net.Conn, account string, ok bool) Decision {
	if sc := FromConn(c); sc != nil {
		return sc.ReportAuth(account, ok)
	}
	return allow
}
