package server

// Interop with real POP3 clients against agua's POP3 and POP3S listeners:
// Python's poplib (plain, STLS, implicit TLS), curl (pop3://, pop3:// with
// STLS, pop3s://), fetchmail and getmail6, each fetching and deleting
// messages delivered through agua's SMTP listener.
//
// A missing client program skips its subtest with a visible message,
// except when CI=true, where it fails: the CI image must provide it.
// Debian packages: python3 curl fetchmail getmail6.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool skips (or, with CI=true, fails) when a client is not installed.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not installed (Debian package %s): POP3 interop with it not tested", name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// runTool runs a client with a deadline and returns its combined output.
func runTool(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func token(t *testing.T) string {
	var b [6]byte
	rand.Read(b[:])
	return "tok-" + hex.EncodeToString(b[:])
}

// interopUser creates a user of its own for one client, so clients never
// meet each other's maildrop lock.
func interopUser(t *testing.T, ts *testServer, name string) string {
	t.Helper()
	addr := name + "@" + testDomain
	if err := ts.dir.AddUser(context.Background(), addr, testPass, 0); err != nil {
		t.Fatal(err)
	}
	return addr
}

// deliverTokens delivers n messages to user over SMTP and returns their
// tokens, each in the subject and the body.
func deliverTokens(t *testing.T, ts *testServer, user string, n int) []string {
	t.Helper()
	var toks []string
	for range n {
		tok := token(t)
		smtpDeliver(t, ts.srv.Addr("smtp"), user, tok, "body of "+tok+"\r\n..a dot line\r\n")
		toks = append(toks, tok)
	}
	return toks
}

func expectAll(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

// expectEmpty checks that the clients deleted what they fetched.
func expectEmpty(t *testing.T, ts *testServer, user string) {
	t.Helper()
	if n := len(ts.messages(t, user)); n != 0 {
		t.Fatalf("%s still holds %d messages", user, n)
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// poplibScript logs in (after STLS when asked), checks STAT, retrieves every
// message, deletes them all and quits, printing what it got.
const poplibScript = `
import poplib, ssl, sys
mode, host, port, user, password = sys.argv[1:6]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == "ssl":
    p = poplib.POP3_SSL(host, int(port), context=ctx, timeout=20)
else:
    p = poplib.POP3(host, int(port), timeout=20)
print("welcome", p.getwelcome().decode())
caps = p.capa()
print("capa", sorted(caps))
if mode == "stls":
    print("stls", p.stls(ctx).decode())
p.user(user)
print("pass", p.pass_(password).decode())
count, size = p.stat()
print("stat", count, size)
print("uidl", p.uidl()[1])
for i in range(1, count + 1):
    resp, lines, octets = p.retr(i)
    print("retr", i, octets)
    sys.stdout.write("\n".join(l.decode() for l in lines) + "\n")
    print("dele", p.dele(i).decode())
print("quit", p.quit().decode())
`

func TestPOP3Interop(t *testing.T) {
	ts := startServer(t, nil)
	host := "127.0.0.1"
	pop3, pop3s := port(ts.srv.Addr("pop3")), port(ts.srv.Addr("pop3s"))

	for _, mode := range []string{"plain", "stls", "ssl"} {
		t.Run("poplib/"+mode, func(t *testing.T) {
			py := needTool(t, "python3", "python3")
			user := interopUser(t, ts, "poplib-"+mode)
			toks := deliverTokens(t, ts, user, 2)
			p := pop3
			if mode == "ssl" {
				p = pop3s
			}
			out, err := runTool(t, nil, py, "-c", poplibScript, mode, host, p, user, testPass)
			if err != nil {
				t.Fatalf("poplib: %v\n%s", err, out)
			}
			expectAll(t, out, "stat 2 ", "retr 1", "retr 2", toks[0], toks[1], "body of "+toks[1], "\n.a dot line\n", "quit +OK")
			if mode == "plain" {
				expectAll(t, out, "'STLS'", "'UIDL'", "'TOP'", "'USER'", "'PIPELINING'", "'RESP-CODES'")
			}
			if mode == "stls" {
				expectAll(t, out, "stls +OK")
			}
			expectEmpty(t, ts, user)
		})
	}

	curlCases := []struct {
		name string
		url  string
		args []string
	}{
		{"pop3", "pop3://" + host + ":" + pop3, nil},
		{"pop3-stls", "pop3://" + host + ":" + pop3, []string{"--ssl-reqd", "-k"}},
		{"pop3s", "pop3s://" + host + ":" + pop3s, []string{"-k"}},
	}
	for _, c := range curlCases {
		t.Run("curl/"+c.name, func(t *testing.T) {
			curl := needTool(t, "curl", "curl")
			user := interopUser(t, ts, "curl-"+c.name)
			toks := deliverTokens(t, ts, user, 2)
			base := append([]string{"-sS", "--max-time", "20", "-u", user + ":" + testPass}, c.args...)
			// LIST, RETR 2, then DELE 1 and 2 (-I: no transfer).
			out, err := runTool(t, nil, curl, append(base, c.url+"/")...)
			if err != nil {
				t.Fatalf("curl list: %v\n%s", err, out)
			}
			expectAll(t, out, "1 ", "2 ")
			out, err = runTool(t, nil, curl, append(base, c.url+"/2")...)
			if err != nil {
				t.Fatalf("curl retr: %v\n%s", err, out)
			}
			expectAll(t, out, "Subject: "+toks[1], "body of "+toks[1], "\r\n.a dot line\r\n")
			for _, n := range []string{"1", "1"} { // the second DELE 1 runs in a new session: message 2 is now 1
				out, err = runTool(t, nil, curl, append(base, "-X", "DELE", "-I", c.url+"/"+n)...)
				if err != nil {
					t.Fatalf("curl dele: %v\n%s", err, out)
				}
			}
			expectEmpty(t, ts, user)
		})
	}

	t.Run("fetchmail", func(t *testing.T) {
		fm := needTool(t, "fetchmail", "fetchmail")
		for _, tls := range []string{"stls", "pop3s"} {
			user := interopUser(t, ts, "fetchmail-"+tls)
			toks := deliverTokens(t, ts, user, 3)
			home := t.TempDir()
			out := filepath.Join(home, "delivered")
			p, sslOpts := pop3, "sslproto tls1.2+ no sslcertck"
			if tls == "pop3s" {
				p, sslOpts = pop3s, "ssl no sslcertck"
			}
			rc := filepath.Join(home, "fetchmailrc")
			os.WriteFile(rc, []byte(fmt.Sprintf(`set no syslog
poll %s with proto POP3 port %s uidl timeout 20
  user "%s" there with password "%s" is "%s" here
  %s nokeep fetchall
  mda "/bin/sh -c 'cat >> %s'"
`, host, p, user, testPass, user, sslOpts, out)), 0o600)
			res, err := runTool(t, []string{"HOME=" + home}, fm, "-f", rc, "--nodetach", "--pidfile", filepath.Join(home, "pid"), "-v")
			if err != nil {
				t.Fatalf("fetchmail over %s: %v\n%s", tls, err, res)
			}
			if tls == "stls" {
				expectAll(t, res, "POP3> STLS", "POP3< +OK Begin TLS negotiation")
			}
			got, _ := os.ReadFile(out)
			expectAll(t, string(got), toks[0], toks[1], toks[2], "\n.a dot line")
			expectEmpty(t, ts, user)
		}
	})

	t.Run("getmail6", func(t *testing.T) {
		gm := needTool(t, "getmail", "getmail6")
		for _, retriever := range []string{"SimplePOP3Retriever", "SimplePOP3SSLRetriever"} {
			user := interopUser(t, ts, "getmail-"+strings.ToLower(retriever))
			toks := deliverTokens(t, ts, user, 2)
			dir := t.TempDir()
			out := filepath.Join(dir, "delivered")
			p := pop3
			if retriever == "SimplePOP3SSLRetriever" {
				p = pop3s
			}
			rc := filepath.Join(dir, "getmailrc")
			os.WriteFile(rc, []byte(fmt.Sprintf(`[retriever]
type = %s
server = %s
port = %s
username = %s
password = %s
timeout = 20

[destination]
# An external command: getmail's Maildir destination refuses to run as
# root, which CI containers often are.
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat >> %s")
allow_root_commands = true

[options]
delete = true
read_all = true
verbose = 2
`, retriever, host, p, user, testPass, out)), 0o600)
			res, err := runTool(t, nil, gm, "--rcfile="+rc, "--getmaildir="+dir)
			if err != nil {
				t.Fatalf("getmail %s: %v\n%s", retriever, err, res)
			}
			got, _ := os.ReadFile(out)
			expectAll(t, string(got), toks[0], toks[1], "\n.a dot line")
			expectEmpty(t, ts, user)
		}
	})
}
