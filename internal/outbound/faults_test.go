package outbound

import (
	"bufio"
	"crypto/tls"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
)

// TestFaultyPeers: a peer that misbehaves at some stage costs one deferred
// attempt with a clear reason; the engine neither crashes nor hangs, and
// the next (healthy) MX is not blamed.
func TestFaultyPeers(t *testing.T) {
	cases := []struct {
		name  string
		fault func(stage string, c net.Conn) bool
		want  string // in the recorded reply
	}{
		{"hangs before greeting", func(stage string, c net.Conn) bool {
			if stage == "greeting" {
				io.Copy(io.Discard, c) // never says anything
				return true
			}
			return false
		}, "timeout"},
		{"closes mid-DATA", func(stage string, c net.Conn) bool {
			if stage == "data" {
				buf := make([]byte, 10)
				io.ReadFull(c, buf)
				c.Close()
				return true
			}
			return false
		}, "connection with mx.dest.test failed"},
		{"garbage greeting", func(stage string, c net.Conn) bool {
			if stage == "greeting" {
				c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
				c.Close()
				return true
			}
			return false
		}, "protocol error"},
		{"10000 continuation lines", func(stage string, c net.Conn) bool {
			if stage == "ehlo" {
				w := bufio.NewWriter(c)
				for range 10000 {
					w.WriteString("250-PIPELINING\r\n")
				}
				w.WriteString("250 OK\r\n")
				w.Flush()
				io.Copy(io.Discard, c)
				return true
			}
			return false
		}, "longer than 200 lines"},
		{"endless line", func(stage string, c net.Conn) bool {
			if stage == "ehlo" {
				c.Write([]byte("250-" + strings.Repeat("x", 100000)))
				io.Copy(io.Discard, c)
				return true
			}
			return false
		}, "longer than 2048 bytes"},
		{"250 instead of 354", func(stage string, c net.Conn) bool {
			if stage == "data354" {
				c.Write([]byte("250 2.0.0 sure\r\n"))
				io.Copy(io.Discard, c)
				return true
			}
			return false
		}, "in reply to DATA"},
		{"hangs after DATA", func(stage string, c net.Conn) bool {
			if stage == "data" {
				io.Copy(io.Discard, c)
				return true
			}
			return false
		}, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port, lns := listenSamePort(t, "127.0.0.71")
			p := newPeer(t, lns[0])
			p.fault = tc.fault
			startPeers(p)
			ev := newEnv(t, port, func(o *Options) {
				o.Timeouts.Greeting = 300 * time.Millisecond
				o.Timeouts.DataEnd = 300 * time.Millisecond
				o.Timeouts.Command = 300 * time.Millisecond
			})
			ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.71")
			id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
			m := ev.waitState(id, queue.Deferred)
			if r := m.Rcpts[0]; r.Status != queue.Deferred || !strings.Contains(r.Reply, tc.want) {
				t.Fatalf("recipient %+v, want deferred with %q", r, tc.want)
			}
			if len(ev.dsnList()) != 0 {
				t.Fatal("a temporary fault bounced")
			}
		})
	}
}

// TestRepliesAtStages: 4xx and 5xx at each stage of the transaction.
func TestRepliesAtStages(t *testing.T) {
	cases := []struct {
		name  string
		setup func(p *peer)
		want  queue.Status
		reply string
	}{
		{"554 greeting", func(p *peer) { p.greeting = "554 5.7.1 go away" }, queue.Deferred, "554 5.7.1 go away"},
		{"421 greeting", func(p *peer) { p.greeting = "421 4.7.0 too busy" }, queue.Deferred, "421 4.7.0 too busy"},
		{"550 MAIL", func(p *peer) { p.mailReply = func(string) string { return "550 5.7.1 sender refused" } }, queue.Bounced, "550 5.7.1 sender refused"},
		{"452 MAIL", func(p *peer) { p.mailReply = func(string) string { return "452 4.3.1 full" } }, queue.Deferred, "452 4.3.1 full"},
		{"554 end of data", func(p *peer) { p.endReply = func(received) string { return "554 5.7.1 spam" } }, queue.Bounced, "554 5.7.1 spam"},
		{"451 end of data", func(p *peer) { p.endReply = func(received) string { return "451 4.3.0 later" } }, queue.Deferred, "451 4.3.0 later"},
		{"no PIPELINING, 550 RCPT", func(p *peer) {
			p.ext = []string{"8BITMIME"}
			p.rcptReply = func(string) string { return "550 5.1.1 unknown" }
		}, queue.Bounced, "550 5.1.1 unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port, lns := listenSamePort(t, "127.0.0.72")
			p := newPeer(t, lns[0])
			tc.setup(p)
			startPeers(p)
			ev := newEnv(t, port, nil)
			ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.72")
			id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
			if tc.want == queue.Bounced {
				ev.waitGone(id)
				d := ev.waitDSN(1)
				if !strings.Contains(d[0].body, tc.reply) {
					t.Fatalf("DSN lacks %q:\n%s", tc.reply, d[0].body)
				}
				return
			}
			m := ev.waitState(id, queue.Deferred)
			if !strings.Contains(m.Rcpts[0].Reply, tc.reply) {
				t.Fatalf("reply %q, want %q", m.Rcpts[0].Reply, tc.reply)
			}
		})
	}
}

// TestEightBitAndUTF8: BODY=8BITMIME and SMTPUTF8 only when the peer offers
// them; what cannot go bounces with the RFC's code; an ASCII-only message
// flagged SMTPUTF8 is sent to a peer without it (the permitted downgrade).
func TestEightBitAndUTF8(t *testing.T) {
	const body8 = "Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n"
	const bodyBody8 = "Subject: plain\r\n\r\ncaf\xc3\xa9\r\n"
	cases := []struct {
		name    string
		ext     []string
		env     queue.Envelope
		body    string
		bounce  string // expected status in the DSN, or ""
		params  string // expected MAIL parameters
		noParam string
	}{
		{"8bit to 8BITMIME", []string{"8BITMIME"}, queue.Envelope{From: "s@agua.test", To: []string{"x@dest.test"}}, bodyBody8, "", "BODY=8BITMIME", "SMTPUTF8"},
		{"8bit without 8BITMIME", nil, queue.Envelope{From: "s@agua.test", To: []string{"x@dest.test"}}, bodyBody8, "5.6.3", "", ""},
		{"7bit without 8BITMIME", nil, queue.Envelope{From: "s@agua.test", To: []string{"x@dest.test"}, EightBit: true}, msg1, "", "", "BODY"},
		{"UTF-8 address without SMTPUTF8", []string{"8BITMIME"}, queue.Envelope{From: "s@agua.test", To: []string{"jos\xc3\xa9@dest.test"}, UTF8: true}, msg1, "5.6.7", "", ""},
		{"UTF-8 header without SMTPUTF8", []string{"8BITMIME"}, queue.Envelope{From: "s@agua.test", To: []string{"x@dest.test"}, UTF8: true}, body8, "5.6.7", "", ""},
		{"UTF-8 to SMTPUTF8", []string{"8BITMIME", "SMTPUTF8"}, queue.Envelope{From: "s@agua.test", To: []string{"jos\xc3\xa9@dest.test"}, UTF8: true}, body8, "", "SMTPUTF8", ""},
		{"ASCII flagged SMTPUTF8, downgraded", []string{"8BITMIME"}, queue.Envelope{From: "s@agua.test", To: []string{"x@dest.test"}, UTF8: true}, msg1, "", "", "SMTPUTF8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port, lns := listenSamePort(t, "127.0.0.73")
			p := newPeer(t, lns[0])
			p.ext = tc.ext
			startPeers(p)
			ev := newEnv(t, port, nil)
			ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.73")
			id, err := ev.q.Enqueue(t.Context(), tc.env, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			ev.waitGone(id)
			if tc.bounce != "" {
				d := ev.waitDSN(1)
				if !strings.Contains(d[0].body, "Status: "+tc.bounce) {
					t.Fatalf("DSN:\n%s", d[0].body)
				}
				if len(p.received()) != 0 {
					t.Fatal("sent although it should bounce")
				}
				return
			}
			r := p.received()
			if len(r) != 1 || r[0].data != tc.body {
				t.Fatalf("received %+v", r)
			}
			if !strings.Contains(r[0].params, tc.params) || (tc.noParam != "" && strings.Contains(r[0].params, tc.noParam)) {
				t.Fatalf("MAIL parameters %q, want %q and not %q", r[0].params, tc.params, tc.noParam)
			}
		})
	}
}

// TestSizeLimit: RFC 1870: a message larger than the peer's SIZE bounces
// with 5.3.4 without being sent.
func TestSizeLimit(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.74")
	p := newPeer(t, lns[0])
	p.ext = []string{"PIPELINING", "SIZE 100"}
	startPeers(p)
	ev := newEnv(t, port, nil)
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.74")
	id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1+strings.Repeat("x", 200)+"\r\n")
	ev.waitGone(id)
	if d := ev.waitDSN(1); !strings.Contains(d[0].body, "Status: 5.3.4") {
		t.Fatalf("DSN:\n%s", d[0].body)
	}
	small := ev.enqueue("s@agua.test", []string{"x@dest.test"}, "Subject: s\r\n\r\nx\r\n")
	ev.waitGone(small)
	if r := p.received(); len(r) != 1 || !strings.Contains(r[0].params, "SIZE=17") {
		t.Fatalf("received %+v", r)
	}
}

// TestOpportunisticTLS: STARTTLS when offered, whatever the certificate;
// a failed handshake is retried in the clear (RFC 7435).
func TestOpportunisticTLS(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.75", "127.0.0.76")
	srvTLS, _ := testTLS(t, "other-name.test") // does not match the MX name
	good := newPeer(t, lns[0])
	good.tls = srvTLS
	broken := newPeer(t, lns[1])
	broken.tls = srvTLS
	broken.fault = func(stage string, c net.Conn) bool {
		if stage == "starttls" {
			c.Write([]byte("not a TLS record\r\n"))
			c.Close()
			return true
		}
		return false
	}
	startPeers(good, broken)
	ev := newEnv(t, port, nil)
	ev.dns.Add(t,
		"tls.test. 300 IN MX 10 mx.tls.test.", "mx.tls.test. 300 IN A 127.0.0.75",
		"broken.test. 300 IN MX 10 mx.broken.test.", "mx.broken.test. 300 IN A 127.0.0.76")
	a := ev.enqueue("s@agua.test", []string{"x@tls.test"}, msg1)
	b := ev.enqueue("s@agua.test", []string{"x@broken.test"}, msg1)
	ev.waitGone(a)
	ev.waitGone(b)
	if r := good.received(); len(r) != 1 || !r[0].tls {
		t.Fatalf("TLS peer received %+v", r)
	}
	if r := broken.received(); len(r) != 1 || r[0].tls {
		t.Fatalf("broken-TLS peer received %+v", r)
	}
	if !strings.Contains(ev.logs.String(), "retrying without TLS") {
		t.Error("no log line for the failed handshake")
	}
}

// TestRelayHost: everything goes to the relay host, whatever the
// recipients' DNS says; TLS is required and verified, AUTH follows it.
func TestRelayHost(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.78", "127.0.0.79")
	srvTLS, pool := testTLS(t, "relay.test")
	relay := newPeer(t, lns[0])
	relay.tls = srvTLS
	relay.ext = append(relay.ext, "AUTH PLAIN LOGIN")
	plain := newPeer(t, lns[1])
	startPeers(relay, plain)
	ev := newEnv(t, 0, func(o *Options) {
		o.RelayHost = "relay.test:" + strconv.Itoa(port)
		o.RelayUser, o.RelayPassword = "user@agua.test", "secret"
		o.RelayRequireTLS = true
		o.TLSConfig = &tls.Config{RootCAs: pool}
	})
	ev.dns.Add(t, "relay.test. 300 IN A 127.0.0.78")
	id := ev.enqueue("s@agua.test", []string{"x@anywhere.test", "y@elsewhere.test"}, msg1)
	ev.waitGone(id)
	r := relay.received()
	if len(r) != 1 || len(r[0].rcpts) != 2 || !r[0].tls {
		t.Fatalf("relay received %+v", r)
	}
	if r[0].auth != "PLAIN AHVzZXJAYWd1YS50ZXN0AHNlY3JldA==" {
		t.Fatalf("AUTH %q", r[0].auth)
	}

	// A relay without STARTTLS: deferred, the password never sent.
	ev2 := newEnv(t, 0, func(o *Options) {
		o.RelayHost = "127.0.0.79:" + strconv.Itoa(port)
		o.RelayUser, o.RelayPassword = "user@agua.test", "secret"
		o.RelayRequireTLS = true
	})
	id = ev2.enqueue("s@agua.test", []string{"x@anywhere.test"}, msg1)
	m := ev2.waitState(id, queue.Deferred)
	if !strings.Contains(m.Rcpts[0].Reply, "4.7.10") || len(plain.received()) != 0 {
		t.Fatalf("relay without TLS: %+v", m.Rcpts[0])
	}
	plain.mu.Lock()
	defer plain.mu.Unlock()
	for _, c := range plain.cmds {
		if strings.HasPrefix(c, "AUTH") {
			t.Fatal("password sent without TLS")
		}
	}
}

// TestDSNIsValidReport parses the DSN as a MIME multipart/report (RFC 3464).
func TestDSNIsValidReport(t *testing.T) {
	ev := newEnv(t, 1, nil)
	ev.dns.Add(t, "nomail.test. 300 IN MX 0 .")
	id := ev.enqueue("sender@agua.test", []string{"x@nomail.test"}, msg1)
	ev.waitGone(id)
	d := ev.waitDSN(1)
	m, err := mail.ReadMessage(strings.NewReader(d[0].body))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Auto-Submitted") != "auto-replied" || m.Header.Get("To") != "<sender@agua.test>" {
		t.Fatalf("headers %v", m.Header)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct := part.Header.Get("Content-Type")
		types = append(types, strings.Split(ct, ";")[0])
		b, _ := io.ReadAll(part)
		if strings.HasPrefix(ct, "message/delivery-status") {
			for _, f := range []string{"Reporting-MTA: dns; agua.test", "Final-Recipient: rfc822; x@nomail.test", "Action: failed", "Status: 5.1.10"} {
				if !strings.Contains(string(b), f) {
					t.Errorf("delivery-status lacks %q", f)
				}
			}
		}
		if ct == "text/rfc822-headers" && !strings.Contains(string(b), "Subject: hello") {
			t.Errorf("original headers missing: %q", b)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("parts %v", types)
	}
}
