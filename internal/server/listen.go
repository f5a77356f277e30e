package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ErrAddressInUse: another program (often a second agua with another data
// folder) already listens on a listener's address.
var ErrAddressInUse = errors.New("address already in use by another program")

// listenTCP binds addr through the shield's accept sockets ([shield.accept])
// for the listener called name.
//
// Those sockets set SO_REUSEPORT, and the kernel lets sockets that set it
// share a port with any process of the same user that sets it too: a
// second agua started on another data folder would bind the same ports and
// take part of the connections (and the mail), with no error anywhere. A
// probe without SO_REUSEPORT first fails with EADDRINUSE whenever anything
// listens there, so that case is refused at start, saying what to check.
func (s *Server) listenTCP(name, addr string) (net.Listener, error) {
	if err := probeFree(addr); err != nil {
		return nil, fmt.Errorf("%s listener %s: %w (another agua serve, or another mail server? `ss -ltnp` names the program)", name, addr, err)
	}
	ln, err := s.shield.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	return ln, nil
}

// probeFree reports ErrAddressInUse when a plain socket (no SO_REUSEPORT)
// cannot bind addr because the address is taken. Port 0 is always free;
// other bind failures (a privileged port, an address not on this host) are
// left to the real bind, which reports them.
func probeFree(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return ErrAddressInUse
	}
	if err == nil {
		ln.Close()
	}
	return nil
}
