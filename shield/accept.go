package shield

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// The accept path. A connect flood fills the kernel's accept queue faster
// than one socket is emptied; a full queue drops SYNs (TcpExtListenOverflows),
// and every client, legitimate or not, then waits for a SYN retry (1 s, 3 s).
// Listen binds several sockets to one address with SO_REUSEPORT, so the
// kernel spreads new connections over as many accept queues, each emptied by
// its own goroutines, and sets the listen backlog of each.

// AcceptConfig configures the sockets Listen binds.
type AcceptConfig struct {
	Sockets int `toml:"sockets" doc:"accept sockets bound to each listener address with SO_REUSEPORT (Linux spreads new connections over their queues); 0: one per CPU (GOMAXPROCS), at least 4"`
	Backlog int `toml:"backlog" doc:"listen backlog of each accept socket (accept queue length); the kernel caps it at net.core.somaxconn, raise that with sysctl -w net.core.somaxconn=N (and net.ipv4.tcp_max_syn_backlog); 0: net.core.somaxconn"`
}

func (a AcceptConfig) validate(bad func(field, format string, args ...any)) {
	if a.Sockets < 0 || a.Sockets > 256 {
		bad("accept.sockets", "must be between 0 (one per CPU, at least 4) and 256")
	}
	if a.Backlog < 0 || a.Backlog > 1<<20 {
		bad("accept.backlog", "must be between 0 (net.core.somaxconn) and 1048576")
	}
}

// minSockets is the fewest sockets Listen binds by default. Each has its
// own accept queue of up to net.core.somaxconn connections, so even on a
// machine of one or two CPUs a connect flood has several queues to fill
// while a busy process is between two accepts.
const minSockets = 4

// sockets is how many sockets Listen binds.
func (a AcceptConfig) sockets() int {
	if a.Sockets > 0 {
		return a.Sockets
	}
	return max(minSockets, runtime.GOMAXPROCS(0))
}

// Somaxconn returns the kernel's cap on a listen backlog
// (net.core.somaxconn), or 0 when it cannot be read.
func Somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// Listen binds a TCP address for Shield.Listener: Config.Accept.Sockets
// sockets with SO_REUSEPORT (one when the system has no SO_REUSEPORT),
// each with Config.Accept.Backlog. The returned listener accepts from all
// of them; Shield.Listener runs accept goroutines on each socket directly.
// Port 0 picks one port for all of them.
func (s *Shield) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	acc := s.cfg().Accept
	n := acc.sockets()
	if mx := Somaxconn(); acc.Backlog > mx && mx > 0 {
		s.log.Warn("shield accept.backlog is above net.core.somaxconn: the kernel caps it; raise it with sysctl -w net.core.somaxconn=N",
			"backlog", acc.Backlog, "somaxconn", mx)
	}
	m := &multiListener{}
	for i := range n {
		lc := net.ListenConfig{
			// TCP keep-alive is set once on the listening socket, which
			// accepted connections inherit on Linux, instead of by Go on
			// each accepted one (four setsockopt(2) calls per connection).
			KeepAlive: -1,
			Control: func(network, _ string, c syscall.RawConn) error {
				var serr error
				if err := c.Control(func(fd uintptr) {
					if strings.HasPrefix(network, "tcp") {
						serr = setKeepAlive(int(fd))
					}
					if serr == nil && n > 1 {
						serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
					}
				}); err != nil {
					return err
				}
				return serr
			},
		}
		ln, err := lc.Listen(ctx, network, address)
		if err != nil {
			m.Close()
			if i > 0 {
				return nil, fmt.Errorf("accept socket %d of %d on %s: %w", i+1, n, address, err)
			}
			return nil, err
		}
		if acc.Backlog > 0 {
			if err := setBacklog(ln, acc.Backlog); err != nil {
				ln.Close()
				m.Close()
				return nil, fmt.Errorf("listen backlog %d on %s: %w", acc.Backlog, address, err)
			}
		}
		if i == 0 {
			address = ln.Addr().String() // port 0: the others take the same port
		}
		m.socks = append(m.socks, &socket{Listener: ln})
	}
	return m, nil
}

// keepAlive* are the TCP keep-alive settings of accepted
// connections: Go's defaults (net.KeepAliveConfig), probes after 15 s
// idle, every 15 s, 9 unanswered end the connection.
const (
	keepAliveIdle     = 15
	keepAliveInterval = 15
	keepAliveCount    = 9
)

// setKeepAlive turns TCP keep-alive on for a listening socket fd: the
// connections it accepts inherit the settings (Linux copies them in
// tcp_create_openreq_child).
func setKeepAlive(fd int) error {
	for _, o := range []struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, keepAliveIdle},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, keepAliveInterval},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return fmt.Errorf("keep-alive on the listening socket: %w", err)
		}
	}
	return nil
}

// setBacklog calls listen(2) again on a listening socket: Linux then
// takes the new backlog (capped at net.core.somaxconn). Go's net package
// always passes somaxconn.
func setBacklog(ln net.Listener, backlog int) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) }); err != nil {
		return err
	}
	return lerr
}

// socket is one accept socket of a multiListener.
type socket struct {
	net.Listener
	accepted atomic.Uint64 // connections accepted from this socket
}

func (k *socket) Accept() (net.Conn, error) {
	c, err := k.Listener.Accept()
	if err == nil {
		k.accepted.Add(1)
	}
	return c, err
}

// multiListener is several sockets bound to one address. Shield.Listener
// accepts from each socket directly (acceptSockets); its own Accept, for
// any other user, gathers the sockets' connections through a channel.
type multiListener struct {
	socks []*socket

	once      sync.Once
	ch        chan acceptResult
	done      chan struct{}
	closeOnce sync.Once
}

func (m *multiListener) Accept() (net.Conn, error) {
	m.once.Do(func() {
		m.ch = make(chan acceptResult)
		for _, k := range m.socks {
			go func() {
				for {
					c, err := k.Accept()
					select {
					case m.ch <- acceptResult{c: nil, err: err, raw: c}:
					case <-m.closed():
						if c != nil {
							c.Close()
						}
						return
					}
					if errors.Is(err, net.ErrClosed) {
						return
					}
				}
			}()
		}
	})
	select {
	case r := <-m.ch:
		return r.raw, r.err
	case <-m.closed():
		return nil, net.ErrClosed
	}
}

func (m *multiListener) closed() chan struct{} {
	m.closeOnce.Do(func() { m.done = make(chan struct{}) })
	return m.done
}

func (m *multiListener) Addr() net.Addr { return m.socks[0].Addr() }

func (m *multiListener) Close() error {
	done := m.closed()
	select {
	case <-done:
	default:
		close(done)
	}
	var errs []error
	for _, k := range m.socks {
		errs = append(errs, k.Close())
	}
	return errors.Join(errs...)
}

// acceptSockets returns the sockets to accept from: each socket of a
// multiListener, or inner itself.
func acceptSockets(inner net.Listener) []net.Listener {
	m, ok := inner.(*multiListener)
	if !ok {
		return []net.Listener{inner}
	}
	out := make([]net.Listener, len(m.socks))
	for i, k := range m.socks {
		out[i] = k
	}
	return out
}
