package server

import (
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// Loopback addresses of the outbound tests: the test's DNS server, the
// receiving agua, the submitting client, the sender's source address and
// a host where nothing listens. None is 127.0.0.1, which is allowlisted.
const (
	labDNS    = "127.0.0.91"
	labPeer   = "127.0.0.92"
	labClient = "127.0.0.93"
	labSource = "127.0.0.95"
	labDead   = "127.0.0.94"
)

// freePort returns a TCP port free on ip now.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPeer runs the receiving agua: MX for remote.test on labPeer:port,
// with user bob@remote.test.
func startPeer(t *testing.T, port int) *testServer {
	t.Helper()
	peer := startServer(t, func(c *config.Config) {
		c.Hostname = "mx.remote.test"
		c.SMTP.Listen = []string{net.JoinHostPort(labPeer, strconv.Itoa(port))}
	})
	if err := peer.dir.AddDomain(t.Context(), "remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := peer.dir.AddUser(t.Context(), "bob@remote.test", "bob's password", 0); err != nil {
		t.Fatal(err)
	}
	return peer
}

// startSender runs the submitting agua (mail.example.test, user alice)
// whose DNS is dns and whose mail exchangers listen on port; keys are DKIM
// keys made in its data folder before it starts.
func startSender(t *testing.T, dns *dnstest.Server, port int, mutate func(*config.Config)) (*testServer, []*dkim.Key) {
	t.Helper()
	data := t.TempDir()
	var keys []*dkim.Key
	for _, algo := range []dkim.Algo{dkim.Ed25519, dkim.RSA} {
		k, err := dkim.Keygen(data, testDomain, algo, "", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	ts := startServer(t, func(c *config.Config) {
		c.DataDir = data
		c.Hostname = "mail.example.test"
		c.DNS.Resolver = []string{dns.Addr}
		c.Outbound.SMTPPort = port
		c.Outbound.SourceIP = labSource
		c.Outbound.RetryMin = 100 * time.Millisecond
		c.Outbound.RetryMax = 200 * time.Millisecond
		if mutate != nil {
			mutate(c)
		}
	})
	return ts, keys
}

// submit sends one message over submission with AUTH, from labClient.
func submit(t *testing.T, ts *testServer, rcpts []string, body string) string {
	t.Helper()
	c := dialFrom(t, ts.srv.Addr("submission"), labClient)
	defer c.conn.Close()
	c.expect("220 ")
	c.cmd("EHLO laptop.example", "250")
	c.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "235")
	reply := c.deliver(testUser, rcpts, body)
	c.cmd("QUIT", "221")
	return reply
}

// waitOutbound polls cond until it holds, for at most a minute (the
// machine may be busy; nothing here depends on how long it takes).
func waitOutbound(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dkimPython finds a python3 with dkimpy (Debian python3-dkim). With
// CI=true a missing one fails the test, elsewhere it skips.
func dkimPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import dkim, nacl").Run() == nil {
			return path
		}
	}
	msg := "python3 with the dkim module not found (Debian: apt-get install python3-dkim): independent DKIM verification not run"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("SKIP: " + msg)
	return ""
}

// verifyDKIM verifies msg with dkimpy (internal/dkim/testdata/verify.py),
// serving keys' records as DNS, and returns its lines.
func verifyDKIM(t *testing.T, keys []*dkim.Key, msg string) []string {
	t.Helper()
	py := dkimPython(t)
	dir := t.TempDir()
	records := map[string][]string{}
	for _, k := range keys {
		records[k.Name()] = k.RecordStrings()
	}
	b, _ := json.Marshal(records)
	keyFile, msgFile := filepath.Join(dir, "keys.json"), filepath.Join(dir, "msg")
	if err := os.WriteFile(keyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(msgFile, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, filepath.Join("..", "dkim", "testdata", "verify.py"), keyFile, msgFile).CombinedOutput()
	if err != nil {
		t.Fatalf("verify.py: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestSubmissionToRemoteDomain: issue 12's first "done when". A message
// submitted with AUTH for a remote domain is queued, DKIM-signed and
// delivered over SMTP to that domain's MX (a second agua found through the
// test's DNS), where dkimpy verifies both signatures (ed25519 and RSA); a
// tampered copy fails. A message for a local and a remote recipient
// reaches both. Before: 550 5.3.0 at RCPT.
func TestSubmissionToRemoteDomain(t *testing.T) {
	dns := dnstest.Start(t, labDNS)
	port := freePort(t, labPeer)
	dns.Add(t, "remote.test. 300 IN MX 10 mx.remote.test.", "mx.remote.test. 300 IN A "+labPeer)
	peer := startPeer(t, port)
	sender, keys := startSender(t, dns, port, nil)

	body := "From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: out into the world\r\n" +
		"Message-ID: <first@example.test>\r\n\r\nHello Bob,\r\nfrom the other server.\r\n"
	if got := submit(t, sender, []string{"bob@remote.test"}, body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %q", got)
	}
	waitOutbound(t, "bob's message at the peer", func() bool { return len(peer.messages(t, "bob@remote.test")) == 1 })
	msg := peer.messages(t, "bob@remote.test")[0]
	if !strings.Contains(msg, "Return-Path: <alice@example.test>") || !strings.Contains(msg, "from the other server.") ||
		!strings.Contains(msg, "from mail.example.test (["+labSource+"])") {
		t.Errorf("delivered message:\n%s", msg)
	}
	if n := strings.Count(msg, "DKIM-Signature:"); n != 2 {
		t.Fatalf("%d DKIM signatures, want 2 (ed25519 and RSA):\n%s", n, msg)
	}
	res := verifyDKIM(t, keys, msg)
	if len(res) != 2 || !strings.Contains(res[0], "pass d=example.test") || !strings.Contains(res[0], "a=ed25519-sha256") ||
		!strings.Contains(res[1], "pass d=example.test") || !strings.Contains(res[1], "a=rsa-sha256") {
		t.Fatalf("dkimpy: %q", res)
	}
	tampered := strings.Replace(msg, "from the other server.", "from someone else.", 1)
	if res := verifyDKIM(t, keys, tampered); len(res) != 2 || !strings.Contains(res[0], "fail") || !strings.Contains(res[1], "fail") {
		t.Fatalf("dkimpy on a tampered body: %q", res)
	}
	waitOutbound(t, "the sender's queue to empty", func() bool { return sender.srv.out.queue.Stats().Messages == 0 })

	t.Run("local and remote recipients", func(t *testing.T) {
		body := "From: alice@example.test\r\nSubject: to both\r\n\r\nfor Alice and Bob\r\n"
		if got := submit(t, sender, []string{"bob@remote.test", testUser}, body); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("submission: %q", got)
		}
		// The local copy is delivered before the 250.
		var local []string
		for _, m := range sender.messages(t, testUser) {
			if strings.Contains(m, "for Alice and Bob") {
				local = append(local, m)
			}
		}
		if len(local) != 1 || strings.Contains(local[0], "DKIM-Signature") {
			t.Fatalf("alice's local copies: %q", local)
		}
		waitOutbound(t, "bob's second message", func() bool { return len(peer.messages(t, "bob@remote.test")) == 2 })
	})

	t.Run("relay refusal on the MX port", func(t *testing.T) {
		c := dialFrom(t, sender.srv.Addr("smtp"), labClient)
		defer c.conn.Close()
		c.expect("220 ")
		c.cmd("EHLO client.example", "250")
		c.cmd("MAIL FROM:<x@elsewhere.example>", "250")
		c.cmd("RCPT TO:<bob@remote.test>", "550 5.7.1")
	})
}

// TestUnreachableBounces: a destination where nothing listens fails
// temporarily; once the queue lifetime has passed the message bounces with
// an RFC 3464 report delivered to the sender's own mailbox.
func TestUnreachableBounces(t *testing.T) {
	dns := dnstest.Start(t, labDNS)
	port := freePort(t, labDead)
	dns.Add(t, "dead.test. 300 IN MX 10 mx.dead.test.", "mx.dead.test. 300 IN A "+labDead)
	sender, _ := startSender(t, dns, port, func(c *config.Config) { c.Outbound.QueueLifetime = time.Second })

	body := "From: alice@example.test\r\nTo: carol@dead.test\r\nSubject: into the void\r\n\r\nanyone?\r\n"
	if got := submit(t, sender, []string{"carol@dead.test"}, body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %q", got)
	}
	waitOutbound(t, "the DSN in alice's mailbox", func() bool { return len(sender.messages(t, testUser)) == 1 })
	dsn := sender.messages(t, testUser)[0]
	if !strings.HasPrefix(dsn, "Return-Path: <>\r\n") {
		t.Errorf("DSN not from the null sender:\n%s", dsn)
	}
	m, err := mail.ReadMessage(strings.NewReader(dsn))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN content type %q %v: %v", mt, params, err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var status string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, p.Header.Get("Content-Type"))
		b, _ := io.ReadAll(p)
		if p.Header.Get("Content-Type") == "message/delivery-status" {
			status = string(b)
		}
	}
	if len(types) != 3 || types[2] != "text/rfc822-headers" {
		t.Fatalf("DSN parts %q", types)
	}
	for _, want := range []string{"Reporting-MTA: dns; mail.example.test", "Final-Recipient: rfc822; carol@dead.test", "Action: failed", "Status: 4.4.7", "Diagnostic-Code: smtp; "} {
		if !strings.Contains(status, want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, status)
		}
	}
	// The bounced message leaves the queue once its state is recorded
	// (after the DSN was handed over).
	waitOutbound(t, "the queue to empty", func() bool { return sender.srv.out.queue.Stats().Messages == 0 })
	// That it was deferred and retried first, with the reply kept for the
	// operator, is TestQueueListThroughServer's (cmd/agua), where the
	// lifetime is long enough to look.
}
