package shield

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// dialProxied connects from src and sends a PROXY header of the given
// version claiming client.
func dialProxied(t *testing.T, addr, src, clientAddr string, version byte) *client {
	t.Helper()
	cl := dialFrom(t, addr, src)
	h := &proxyproto.Header{
		Version:           version,
		Command:           proxyproto.PROXY,
		TransportProtocol: proxyproto.TCPv4,
		SourceAddr:        &net.TCPAddr{IP: net.ParseIP(clientAddr), Port: 40000},
		DestinationAddr:   &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 25},
	}
	if _, err := h.WriteTo(cl.c); err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestProxyProtocol(t *testing.T) {
	cfg := testConfig()
	cfg.TrustedProxies = []string{"127.70.0.1"}
	cfg.Rules = []string{"deny 203.0.113.7", "deny 127.70.0.0/24"} // the proxy's own network is denied: it must never matter
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp", ProxyProtocol: true})

	for _, v := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			denied := dialProxied(t, srv.addr, "127.70.0.1", "203.0.113.7", v)
			denied.expect("554 5.7.1 access denied")

			ok := dialProxied(t, srv.addr, "127.70.0.1", "198.51.100.1", v)
			ok.expect("220")
			if r := ok.cmd("NOOP"); r != "250 ok" {
				t.Fatal(r)
			}
			var conns []ConnInfo
			eventually(t, "conn listed", func() bool { conns = h.s.Conns(); return len(conns) > 0 })
			if conns[len(conns)-1].Addr != mustAddr("198.51.100.1") {
				t.Fatalf("%+v", conns)
			}
			rs := srv.remotes()
			if got := rs[len(rs)-1].String(); got != "198.51.100.1:40000" {
				t.Fatalf("RemoteAddr %s", got)
			}
			ok.cmd("QUIT")
		})
	}

	// The client's behaviour is charged to the client, not to the proxy.
	c := dialProxied(t, srv.addr, "127.70.0.1", "198.51.100.2", 2)
	c.expect("220")
	c.c.Write([]byte("garbage\r\n"))
	c.expect("250")
	if n := h.s.Why(mustAddr("198.51.100.2")).Counters.Events["protocol_error"]; n != 1 {
		t.Fatalf("client not charged: %d", n)
	}

	// An untrusted peer's header is not read: it reaches the application as
	// data, and the peer itself is judged.
	un := dialFrom(t, srv.addr, "127.71.0.1")
	fmt.Fprintf(un.c, "PROXY TCP4 198.51.100.3 127.0.0.1 40000 25\r\n")
	un.expect("220")
	un.expect("250") // "PROXY ..." answered as an (unknown) command
	if n := h.s.Why(mustAddr("127.71.0.1")).Counters.Events["protocol_error"]; n != 1 {
		t.Fatalf("untrusted peer not judged itself: %d", n)
	}
	// A trusted proxy speaking without a header is judged as itself, and is
	// exempt from rules and limits; its first bytes are not lost.
	px := dialFrom(t, srv.addr, "127.70.0.1")
	fmt.Fprintf(px.c, "NOOP\r\n")
	px.expect("220")
	px.expect("250")
}

func TestMiddleware(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.80.0.1", "deny 127.80.0.2 drop"}
	cfg.Limits.RequestRate = 1
	cfg.Limits.RequestBurst = 2
	h := newHarness(t, cfg, Options{})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := h.s.Listener(inner, ListenerConfig{Name: "admin"})
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.RemoteAddr)
	})
	srv := &http.Server{Handler: h.s.Middleware("admin", mux), ConnContext: ConnContext}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	get := func(src string) (*http.Response, error) {
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		return c.Get("http://" + inner.Addr().String() + "/")
	}
	// Policy refusals of connections happen at Accept (the listener); the
	// middleware refuses requests on connections admitted before a ban.
	resp, err := get("127.80.0.9")
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "hello 127.80.0.9:") {
		t.Fatal(string(body))
	}
	// Rate: burst 2, the third is 429 with Retry-After.
	get("127.80.0.9")
	resp, err = get("127.80.0.9")
	if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%v %v", resp, err)
	}
	resp.Body.Close()

	// Behind a plain (non-shield) listener the middleware judges r.RemoteAddr.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	psrv := &http.Server{Handler: h.s.Middleware("web", mux)}
	go psrv.Serve(plain)
	t.Cleanup(func() { psrv.Close() })
	pget := func(src string) (*http.Response, error) {
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		return (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + plain.Addr().String() + "/")
	}
	resp, err = pget("127.80.0.1")
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("%v %v", resp, err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "access denied" {
		t.Fatal(string(body))
	}
	if _, err := pget("127.80.0.2"); err == nil {
		t.Fatal("drop must close without an answer")
	}
	st := h.s.Stats().Listeners
	if st["web"].Rejected != 1 || st["web"].Dropped != 1 || st["admin"].Rejected != 1 {
		t.Fatalf("%+v", st)
	}
}

// TestMiddlewareOnShieldConnReports: a handler can report through the
// request's connection.
func TestMiddlewareOnShieldConnReports(t *testing.T) {
	cfg := testConfig()
	cfg.Thresholds.SetCount("auth_failure", 2)
	h := newHarness(t, cfg, Options{})
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := ConnFromRequest(r).ReportAuth("admin", false); d.Action != Allow {
			http.Error(w, d.Reason, http.StatusForbidden)
			return
		}
		http.Error(w, "bad password", http.StatusUnauthorized)
	})
	srv := &http.Server{Handler: h.s.Middleware("admin", mux), ConnContext: ConnContext}
	go srv.Serve(h.s.Listener(inner, ListenerConfig{Name: "admin"}))
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	var codes []int
	for range 2 {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if codes[0] != 401 || codes[1] != 403 {
		t.Fatal(codes)
	}
}
