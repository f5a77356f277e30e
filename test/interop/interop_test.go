// Package interop runs real SMTP clients against the agua binary: swaks,
// curl and Python's smtplib, over MX, submission with STARTTLS (RFC 6409,
// RFC 3207) and submission over implicit TLS (RFC 8314), with AUTH PLAIN and
// LOGIN (RFC 4954).
//
// A missing client program skips its subtest with a visible message, except
// when CI=true, where it fails: the CI image must provide it. Debian
// packages: swaks libnet-ssleay-perl curl python3.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/test/internal/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const (
	user     = "alice@interop.test"
	password = "alice-Pa55word"
	// victim only ever gets wrong passwords, so the shield's per-account
	// delay after failed logins never slows alice's subtests.
	victim = "victim@interop.test"

	local   = "bob@interop.test" // a second local user
	remote  = "carol@elsewhere.test"
	helo    = "test.local"
	timeout = 20 // seconds, given to every client

	// clientDeadline bounds every client process, in case its own timeout
	// does not fire.
	clientDeadline = 60 * time.Second
)

// TestInterop starts one server and runs every client against it.
func TestInterop(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.AddUser(t, user, password)
	srv.AddUser(t, local, "bob-Pa55word")
	srv.AddUser(t, victim, "victim-Pa55word")
	srv.Start(t)
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	mx, sub, subs := port(srv.SMTP), port(srv.Submission), port(srv.Submissions)

	swaks := func(t *testing.T, port string, args ...string) (string, int) {
		return run(t, "swaks", append([]string{"--server", "127.0.0.1", "--port", port,
			"--helo", helo, "--timeout", strconv.Itoa(timeout)}, args...)...)
	}
	auth := func(mech string) []string {
		return []string{"--auth", mech, "--auth-user", user, "--auth-password", password}
	}

	t.Run("swaks/mx", func(t *testing.T) {
		needSwaks(t, false)
		tok := token()
		out, code := swaks(t, mx, "--from", remote, "--to", user, "--header", "Subject: "+tok, "--body", "swaks mx body "+tok)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "swaks mx body "+tok)
	})

	t.Run("swaks/mx-pipelining", func(t *testing.T) {
		needSwaks(t, false)
		tok := token()
		out, code := swaks(t, mx, "--pipeline", "--from", remote, "--to", user, "--header", "Subject: "+tok, "--body", "swaks pipelined body "+tok)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "swaks pipelined body "+tok)
	})

	for _, mech := range []string{"LOGIN", "PLAIN"} {
		t.Run("swaks/submission-starttls-"+mech, func(t *testing.T) {
			needSwaks(t, true)
			tok := token()
			out, code := swaks(t, sub, append(auth(mech), "--tls", "--from", user, "--to", local,
				"--header", "Subject: "+tok, "--body", "swaks submission body "+tok)...)
			expectExit(t, out, code, 0)
			expectContains(t, out, "235 2.7.0", "220 2.0.0 Ready to start TLS")
			expectDelivered(t, srv, local, tok, "swaks submission body "+tok)
		})
	}

	t.Run("swaks/submission-remote-queued", func(t *testing.T) {
		needSwaks(t, true)
		tok := token()
		out, code := swaks(t, sub, append(auth("PLAIN"), "--tls", "--from", user, "--to", remote,
			"--header", "Subject: "+tok)...)
		expectExit(t, out, code, 0)
		expectContains(t, out, "235 2.7.0", "250 2.0.0")
		expectNotDelivered(t, srv, user, tok)
		// The harness's DNS never answers: the message waits in the queue,
		// shown by the CLI through the running server.
		list := srv.Agua(t, "", "queue", "list")
		expectContains(t, list, user, remote)
	})

	t.Run("swaks/mx-relay-refused", func(t *testing.T) {
		needSwaks(t, false)
		tok := token()
		out, code := swaks(t, mx, "--from", "mallory@elsewhere.test", "--to", remote, "--header", "Subject: "+tok)
		expectFailed(t, out, code)
		expectContains(t, out, "550 5.7.1")
		expectNotDelivered(t, srv, user, tok)
	})

	t.Run("swaks/submission-sender-not-owned-refused", func(t *testing.T) {
		needSwaks(t, true)
		tok := token()
		out, code := swaks(t, sub, append(auth("LOGIN"), "--tls", "--from", local, "--to", local,
			"--header", "Subject: "+tok)...)
		expectFailed(t, out, code)
		expectContains(t, out, "553 5.7.1")
		expectNotDelivered(t, srv, local, tok)
	})

	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run("swaks/submissions-implicit-tls-"+mech, func(t *testing.T) {
			needSwaks(t, true)
			tok := token()
			out, code := swaks(t, subs, append(auth(mech), "--tlsc", "--from", user, "--to", user,
				"--header", "Subject: "+tok, "--body", "swaks implicit tls body "+tok)...)
			expectExit(t, out, code, 0)
			expectContains(t, out, "=== TLS started", "235 2.7.0")
			expectDelivered(t, srv, user, tok, "swaks implicit tls body "+tok)
		})
	}

	// The default loopback exception (allow_insecure_auth_loopback = true)
	// lets local scripts log in without TLS; TestInsecureAuthOff covers the
	// other side.
	t.Run("swaks/submission-plaintext-auth-loopback", func(t *testing.T) {
		needSwaks(t, false)
		tok := token()
		out, code := swaks(t, sub, append(auth("PLAIN"), "--from", user, "--to", user,
			"--header", "Subject: "+tok, "--body", "plaintext loopback body "+tok)...)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "plaintext loopback body "+tok)
	})

	curl := func(t *testing.T, url string, args ...string) (string, int) {
		return run(t, "curl", append([]string{"-sS", "--max-time", strconv.Itoa(timeout), url}, args...)...)
	}
	t.Run("curl/mx", func(t *testing.T) {
		need(t, "curl")
		tok := token()
		file := crlfMessage(t, remote, user, tok, "curl mx body "+tok)
		out, code := curl(t, "smtp://127.0.0.1:"+mx+"/"+helo, "--mail-from", remote, "--mail-rcpt", user, "-T", file)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "curl mx body "+tok)
	})
	t.Run("curl/mx-two-recipients", func(t *testing.T) {
		need(t, "curl")
		tok := token()
		file := crlfMessage(t, remote, user, tok, "curl two recipients body "+tok)
		out, code := curl(t, "smtp://127.0.0.1:"+mx+"/"+helo, "--mail-from", remote, "--mail-rcpt", user, "--mail-rcpt", local, "-T", file)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "curl two recipients body "+tok)
		expectDelivered(t, srv, local, tok, "curl two recipients body "+tok)
	})
	// agua refuses bare LF in DATA (RFC 5321 2.3.8; SMTP smuggling), so a
	// file with Unix line endings needs curl's --crlf.
	t.Run("curl/mx-bare-lf-refused-crlf-accepted", func(t *testing.T) {
		need(t, "curl")
		tok := token()
		file := filepath.Join(t.TempDir(), "lf.eml")
		msg := fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: %s\n\ncurl lf body %s\n", remote, user, tok, tok)
		if err := os.WriteFile(file, []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		out, code := curl(t, "smtp://127.0.0.1:"+mx+"/"+helo, "--mail-from", remote, "--mail-rcpt", user, "-T", file, "-v")
		expectFailed(t, out, code)
		expectContains(t, out, "554 5.6.0")
		expectNotDelivered(t, srv, user, tok)
		out, code = curl(t, "smtp://127.0.0.1:"+mx+"/"+helo, "--crlf", "--mail-from", remote, "--mail-rcpt", user, "-T", file)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "curl lf body "+tok+"\r\n")
	})
	t.Run("curl/smtps", func(t *testing.T) {
		need(t, "curl")
		tok := token()
		file := crlfMessage(t, user, local, tok, "curl smtps body "+tok)
		out, code := curl(t, "smtps://127.0.0.1:"+subs+"/"+helo, "-k", "--user", user+":"+password,
			"--mail-from", user, "--mail-rcpt", local, "-T", file)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, local, tok, "curl smtps body "+tok)
	})
	t.Run("curl/submission-starttls", func(t *testing.T) {
		need(t, "curl")
		tok := token()
		file := crlfMessage(t, user, user, tok, "curl starttls body "+tok)
		out, code := curl(t, "smtp://127.0.0.1:"+sub+"/"+helo, "--ssl-reqd", "-k", "--user", user+":"+password,
			"--mail-from", user, "--mail-rcpt", user, "-T", file, "-v")
		expectExit(t, out, code, 0)
		expectContains(t, out, "> STARTTLS", "235 2.7.0")
		expectDelivered(t, srv, user, tok, "curl starttls body "+tok)
	})
	t.Run("curl/smtps-wrong-password-refused", func(t *testing.T) {
		need(t, "curl")
		tok := token()
		file := crlfMessage(t, victim, victim, tok, "never "+tok)
		out, code := curl(t, "smtps://127.0.0.1:"+subs+"/"+helo, "-k", "--user", victim+":wrong",
			"--mail-from", victim, "--mail-rcpt", victim, "-T", file, "-v")
		expectFailed(t, out, code)
		expectContains(t, out, "535 5.7.8")
		expectNotDelivered(t, srv, victim, tok)
	})

	py := func(t *testing.T, args ...string) (string, int) {
		needPython(t)
		script, err := filepath.Abs(filepath.Join("testdata", "smtp_client.py"))
		if err != nil {
			t.Fatal(err)
		}
		return run(t, "python3", append([]string{script}, args...)...)
	}
	t.Run("python/mx", func(t *testing.T) {
		tok := token()
		// smtplib turns "\n" into CRLF and dot-stuffs (RFC 5321 4.5.2);
		// agua must store the lines as they were.
		body := "python mx body " + tok + "\n.leading dot\n..two dots\n."
		out, code := py(t, "send", "--port", mx, "--from", remote, "--to", user, "--subject", tok, "--body", body)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, strings.ReplaceAll(body, "\n", "\r\n")+"\r\n")
	})
	t.Run("python/submission-starttls-login", func(t *testing.T) {
		tok := token()
		out, code := py(t, "send", "--port", sub, "--tls", "--cafile", srv.CertPath(), "--user", user, "--password", password,
			"--from", user, "--to", local, "--subject", tok, "--body", "python starttls body "+tok)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, local, tok, "python starttls body "+tok)
	})
	t.Run("python/submission-auth-login-initial-response", func(t *testing.T) {
		tok := token()
		out, code := py(t, "send", "--port", sub, "--tls", "--cafile", srv.CertPath(), "--user", user, "--password", password,
			"--mech", "LOGIN", "--from", user, "--to", user, "--subject", tok, "--body", "python auth login body "+tok)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "python auth login body "+tok)
	})
	t.Run("python/submissions-implicit-tls-login", func(t *testing.T) {
		tok := token()
		out, code := py(t, "send", "--port", subs, "--ssl", "--cafile", srv.CertPath(), "--user", user, "--password", password,
			"--from", user, "--to", user, "--subject", tok, "--body", "python implicit tls body "+tok)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "python implicit tls body "+tok)
	})
	t.Run("python/wrong-password", func(t *testing.T) {
		out, code := py(t, "badpass", "--port", sub, "--tls", "--cafile", srv.CertPath(), "--user", victim, "--password", "not-the-password")
		expectExit(t, out, code, 0)
		expectContains(t, out, "SMTPAuthenticationError 535 5.7.8")
	})
}

// TestStartTLSForgetsAuth: RFC 3207 4.2, everything learned before TLS is
// discarded, the authenticated user included (an AUTH over plaintext on
// loopback survived STARTTLS before 726a569).
func TestStartTLSForgetsAuth(t *testing.T) {
	srv := harness.New(t, harness.Options{}) // loopback exception on (default)
	srv.AddUser(t, user, password)
	srv.Start(t)
	c := dialSMTP(t, srv.Submission)
	c.cmd(t, "EHLO "+helo, 250)
	c.cmd(t, "AUTH PLAIN "+plain(user, password), 235)
	c.cmd(t, "STARTTLS", 220)
	c.startTLS(t, srv.CertPath())
	if ehlo := c.cmd(t, "EHLO "+helo, 250); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO after STARTTLS does not offer AUTH:\n%s", ehlo)
	}
	c.cmd(t, "MAIL FROM:<"+user+">", 530)
}

// TestInsecureAuthOff: with allow_insecure_auth_loopback = false, a
// submission client on loopback must start TLS before AUTH is offered or
// accepted (RFC 4954 4, RFC 8314 3).
func TestInsecureAuthOff(t *testing.T) {
	srv := harness.New(t, harness.Options{SMTP: "allow_insecure_auth_loopback = false"})
	srv.AddUser(t, user, password)
	srv.Start(t)
	_, sub, _ := net.SplitHostPort(srv.Submission)

	t.Run("protocol", func(t *testing.T) {
		c := dialSMTP(t, srv.Submission)
		ehlo := c.cmd(t, "EHLO "+helo, 250)
		if strings.Contains(ehlo, "AUTH") {
			t.Errorf("EHLO before TLS offers AUTH:\n%s", ehlo)
		}
		if !strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO before TLS does not offer STARTTLS:\n%s", ehlo)
		}
		c.cmd(t, "AUTH PLAIN "+plain(user, password), 530)
		c.cmd(t, "MAIL FROM:<"+user+">", 530)
		c.cmd(t, "STARTTLS", 220)
		c.startTLS(t, srv.CertPath())
		ehlo = c.cmd(t, "EHLO "+helo, 250)
		if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
			t.Errorf("EHLO after STARTTLS does not offer AUTH PLAIN LOGIN:\n%s", ehlo)
		}
		c.cmd(t, "AUTH PLAIN "+plain(user, password), 235)
		c.cmd(t, "QUIT", 221)
	})

	t.Run("swaks-without-tls-refused", func(t *testing.T) {
		needSwaks(t, false)
		tok := token()
		out, code := run(t, "swaks", "--server", "127.0.0.1", "--port", sub, "--helo", helo, "--timeout", strconv.Itoa(timeout),
			"--auth", "PLAIN", "--auth-user", user, "--auth-password", password,
			"--from", user, "--to", user, "--header", "Subject: "+tok)
		expectFailed(t, out, code)
		ehlo := ehloLines(out)
		if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO without TLS: want STARTTLS and no AUTH; got:\n%s", ehlo)
		}
		expectContains(t, out, "Host did not advertise authentication")
		expectNotDelivered(t, srv, user, tok)
	})

	t.Run("swaks-with-tls-accepted", func(t *testing.T) {
		needSwaks(t, true)
		tok := token()
		out, code := run(t, "swaks", "--server", "127.0.0.1", "--port", sub, "--helo", helo, "--timeout", strconv.Itoa(timeout),
			"--tls", "--auth", "PLAIN", "--auth-user", user, "--auth-password", password,
			"--from", user, "--to", user, "--header", "Subject: "+tok, "--body", "after tls "+tok)
		expectExit(t, out, code, 0)
		expectDelivered(t, srv, user, tok, "after tls "+tok)
	})

	t.Run("python-without-tls", func(t *testing.T) {
		needPython(t)
		script, _ := filepath.Abs(filepath.Join("testdata", "smtp_client.py"))
		out, code := run(t, "python3", script, "noauth", "--port", sub, "--user", user, "--password", password)
		expectExit(t, out, code, 0)
		expectContains(t, out, "AUTH advertised: False", "SMTPNotSupportedError")
	})
}

// need skips the test when tool is not in PATH; with CI=true a missing tool
// fails the test instead.
func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		missing(t, "%s not found in PATH (Debian: apt-get install swaks libnet-ssleay-perl curl python3)", tool)
	}
}

func missing(t *testing.T, format string, a ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and "+format, a...)
	}
	t.Skipf("SKIP: "+format, a...)
}

var (
	swaksTLSOnce sync.Once
	swaksTLS     bool
	swaksSupport string
)

// needSwaks checks for swaks and, with tls, for its TLS support (the Perl
// module Net::SSLeay, Debian libnet-ssleay-perl).
func needSwaks(t *testing.T, tls bool) {
	t.Helper()
	need(t, "swaks")
	if !tls {
		return
	}
	swaksTLSOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), clientDeadline)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "swaks", "--support").CombinedOutput()
		swaksSupport = string(out)
		swaksTLS = strings.Contains(swaksSupport, "=== TLS supported")
	})
	if !swaksTLS {
		missing(t, "swaks has no TLS support (Debian: apt-get install libnet-ssleay-perl); swaks --support says:\n%s", swaksSupport)
	}
}

var (
	pythonOnce sync.Once
	pythonErr  error
)

func needPython(t *testing.T) {
	t.Helper()
	need(t, "python3")
	pythonOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), clientDeadline)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "python3", "-c", "import smtplib, ssl").CombinedOutput(); err != nil {
			pythonErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if pythonErr != nil {
		missing(t, "python3 cannot import smtplib and ssl: %v", pythonErr)
	}
}

// run runs a client with a deadline and returns its combined output and
// exit code.
func run(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = t.TempDir()
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s did not finish within %v\n%s", name, clientDeadline, out)
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out), 0
}

func expectExit(t *testing.T, out string, code, want int) {
	t.Helper()
	if code != want {
		t.Fatalf("exit code %d, want %d; output:\n%s", code, want, out)
	}
}

func expectFailed(t *testing.T, out string, code int) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit code 0, want a failure; output:\n%s", out)
	}
}

func expectContains(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q; output:\n%s", w, out)
		}
	}
}

// ehloLines returns the lines of swaks' transcript that answer EHLO.
func ehloLines(out string) string {
	var b strings.Builder
	for line := range strings.Lines(out) {
		if strings.Contains(line, "250-") || strings.Contains(line, "250 ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// token returns a unique marker for one subtest's message.
func token() string {
	var b [6]byte
	rand.Read(b[:])
	return "interop-" + hex.EncodeToString(b[:])
}

// crlfMessage writes a message with CRLF line endings for curl -T.
func crlfMessage(t *testing.T, from, to, subject, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "message.eml")
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\n\r\n%s\r\n", from, to, subject, time.Now().Format(time.RFC1123Z), body)
	if err := os.WriteFile(p, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// expectDelivered checks that exactly one message in addr's Maildir has
// the token in its Subject, and that its body holds body. Delivery is
// synchronous (the 250 after DATA comes after the file is on disk), so no
// waiting is needed.
func expectDelivered(t *testing.T, srv *harness.Server, addr, tok, body string) {
	t.Helper()
	var hits []harness.MailFile
	for _, f := range srv.Messages(t, addr) {
		if bytes.Contains(f.Data, []byte(tok)) {
			hits = append(hits, f)
		}
	}
	if len(hits) != 1 {
		t.Fatalf("%d messages with token %s in the Maildir of %s, want 1", len(hits), tok, addr)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(hits[0].Data))
	if err != nil {
		t.Fatalf("%s: %v", hits[0].Path, err)
	}
	if got := msg.Header.Get("Subject"); !strings.Contains(got, tok) {
		t.Errorf("Subject %q lacks token %s", got, tok)
	}
	if got := msg.Header.Get("Delivered-To"); !strings.EqualFold(got, addr) {
		t.Errorf("Delivered-To %q, want %s", got, addr)
	}
	var b bytes.Buffer
	b.ReadFrom(msg.Body)
	if !strings.Contains(b.String(), body) {
		t.Errorf("body lacks %q:\n%s", body, b.String())
	}
}

func expectNotDelivered(t *testing.T, srv *harness.Server, addr, tok string) {
	t.Helper()
	for _, f := range srv.Messages(t, addr) {
		if bytes.Contains(f.Data, []byte(tok)) {
			t.Errorf("refused message %s was delivered: %s", tok, f.Path)
		}
	}
}

// smtpConn is a minimal SMTP client for checks the real clients cannot
// express (exact replies before TLS).
type smtpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialSMTP(t *testing.T, addr string) *smtpConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(clientDeadline))
	c := &smtpConn{conn: conn, r: bufio.NewReader(conn)}
	c.expect(t, 220)
	return c
}

// cmd sends a command and checks the reply code; it returns the reply.
func (c *smtpConn) cmd(t *testing.T, line string, want int) string {
	t.Helper()
	if _, err := fmt.Fprintf(c.conn, "%s\r\n", line); err != nil {
		t.Fatal(err)
	}
	return c.expect(t, want)
}

func (c *smtpConn) expect(t *testing.T, want int) string {
	t.Helper()
	var reply strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading reply: %v (so far %q)", err, reply.String())
		}
		reply.WriteString(line)
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	r := reply.String()
	if code, err := strconv.Atoi(r[:min(3, len(r))]); err != nil || code != want {
		t.Fatalf("reply %q, want %d", r, want)
	}
	return r
}

// startTLS runs the TLS handshake, trusting agua's self-signed certificate.
func (c *smtpConn) startTLS(t *testing.T, certPath string) {
	t.Helper()
	pem, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", certPath)
	}
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}
