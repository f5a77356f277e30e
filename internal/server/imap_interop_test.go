package server

// Interop with real IMAP clients against agua's IMAP and IMAPS listeners:
// Python's imaplib (plain, STARTTLS, implicit TLS), curl (imap://, imap://
// with STARTTLS, imaps://) and mutt (driven under tmux), each reading mail
// delivered through agua's SMTP listener.
//
// A missing client program skips its subtest with a visible message,
// except when CI=true, where it fails: the CI image must provide it.
// Debian packages: python3 curl mutt tmux.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needIMAPClient skips (or, with CI=true, fails) when a client is missing.
func needIMAPClient(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not installed (Debian package %s): IMAP interop with it not tested", name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func runClient(t *testing.T, dir string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// newIMAPUser creates a user of its own for one client.
func newIMAPUser(t *testing.T, ts *testServer, name string) string {
	t.Helper()
	addr := name + "@" + testDomain
	if err := ts.dir.AddUser(context.Background(), addr, testPass, 0); err != nil {
		t.Fatal(err)
	}
	return addr
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

// imaplibScript exercises the common commands a desktop client uses.
const imaplibScript = `
import imaplib, ssl, sys, time
mode, host, port, user, password, token = sys.argv[1:7]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == "ssl":
    M = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=20)
else:
    M = imaplib.IMAP4(host, int(port), timeout=20)
    if mode == "starttls":
        print("starttls", M.starttls(ssl_context=ctx)[0])
print("caps", " ".join(M.capabilities))
print("login", M.login(user, password)[0])
typ, boxes = M.list()
print("list", typ, b" | ".join(boxes).decode())
typ, data = M.select("INBOX")
print("select", typ, data[0].decode())
typ, data = M.fetch("1", "(UID FLAGS BODY.PEEK[])")
print("fetch", typ, data[0][0].decode())
body = data[0][1].decode()
assert token in body, body
print("body-ok")
print("store", M.store("1", "+FLAGS", "(\\Flagged)")[0])
typ, data = M.fetch("1", "(FLAGS)")
print("flags", data[0].decode())
typ, data = M.copy("1", "Trash")
print("copy", typ, data[0].decode() if data[0] else "")
typ, data = M.uid("MOVE", "2", "Junk")
print("move", typ)
M.select("Junk")
typ, data = M.search(None, "ALL")
print("junk", data[0].decode())
M.select("INBOX")
print("append", M.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(time.time()), ("Subject: appended " + token + "\r\n\r\nhi\r\n").encode())[0])
M.store("1", "+FLAGS", "(\\Deleted)")
typ, data = M.expunge()
print("expunge", typ, data)
typ, data = M.search(None, "SUBJECT", "appended")
print("search", data[0].decode())
M.close()
print("logout", M.logout()[0])
`

func TestIMAPInteropImaplib(t *testing.T) {
	py := needIMAPClient(t, "python3", "python3")
	ts := startServer(t, nil)
	script := filepath.Join(t.TempDir(), "imaplib_test.py")
	if err := os.WriteFile(script, []byte(imaplibScript), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"plain", "starttls", "ssl"} {
		t.Run(mode, func(t *testing.T) {
			user := newIMAPUser(t, ts, "py-"+mode)
			tok := fmt.Sprintf("tok-%s-%d", mode, time.Now().UnixNano())
			sendMail(t, ts.srv.Addr("smtp"), user, "first "+tok, "body of "+tok+"\r\n")
			sendMail(t, ts.srv.Addr("smtp"), user, "second "+tok, "second body\r\n")
			addr := ts.srv.Addr("imap")
			if mode == "ssl" {
				addr = ts.srv.Addr("imaps")
			}
			out, err := runClient(t, "", py, script, mode, "127.0.0.1", portOf(addr), user, testPass, tok)
			if err != nil {
				t.Fatalf("imaplib: %v\n%s", err, out)
			}
			mustContain(t, out, "login OK", `"Sent"`, "\\Trash", "select OK 2", "body-ok", "\\Flagged",
				"copy OK [COPYUID", "move OK", "junk 1", "append OK", "expunge OK [b'1']", "search 1", "logout BYE")
		})
	}
}

func TestIMAPInteropCurl(t *testing.T) {
	curl := needIMAPClient(t, "curl", "curl")
	ts := startServer(t, nil)
	user := newIMAPUser(t, ts, "curl")
	tok := fmt.Sprintf("tok-curl-%d", time.Now().UnixNano())
	sendMail(t, ts.srv.Addr("smtp"), user, "curl "+tok, "body of "+tok+"\r\n")
	cred := user + ":" + testPass
	for _, c := range []struct {
		name string
		args []string
	}{
		{"imap", []string{"imap://127.0.0.1:" + portOf(ts.srv.Addr("imap")) + "/INBOX;UID=1"}},
		{"imap-starttls", []string{"--ssl-reqd", "-k", "imap://127.0.0.1:" + portOf(ts.srv.Addr("imap")) + "/INBOX;UID=1"}},
		{"imaps", []string{"-k", "imaps://127.0.0.1:" + portOf(ts.srv.Addr("imaps")) + "/INBOX;UID=1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runClient(t, "", curl, append([]string{"-sS", "--max-time", "30", "-u", cred}, c.args...)...)
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			mustContain(t, out, "Subject: curl "+tok, "body of "+tok)
		})
	}
	// A listing of the mailboxes, and a wrong password refused.
	out, err := runClient(t, "", curl, "-sS", "--max-time", "30", "-u", cred, "imap://127.0.0.1:"+portOf(ts.srv.Addr("imap"))+"/")
	if err != nil {
		t.Fatalf("curl list: %v\n%s", err, out)
	}
	mustContain(t, out, "INBOX", "Sent", "Trash")
	out, err = runClient(t, "", curl, "-sS", "--max-time", "30", "-u", user+":wrong", "imap://127.0.0.1:"+portOf(ts.srv.Addr("imap"))+"/INBOX;UID=1")
	if err == nil {
		t.Fatalf("curl with a wrong password succeeded:\n%s", out)
	}
}

// mutt, under tmux for its terminal, opens the INBOX over IMAP and shows
// a message delivered through agua's SMTP.
func TestIMAPInteropMutt(t *testing.T) {
	mutt := needIMAPClient(t, "mutt", "mutt")
	tmux := needIMAPClient(t, "tmux", "tmux")
	ts := startServer(t, nil)
	user := newIMAPUser(t, ts, "mutt")
	tok := fmt.Sprintf("tok-mutt-%d", time.Now().UnixNano())
	sendMail(t, ts.srv.Addr("smtp"), user, "mutt "+tok, "body line of "+tok+"\r\n")
	dir := t.TempDir()
	muttrc := filepath.Join(dir, "muttrc")
	rc := fmt.Sprintf(`set folder="imap://%s@127.0.0.1:%s/"
set imap_user="%s"
set imap_pass="%s"
set spoolfile="+INBOX"
set ssl_starttls=no
set ssl_force_tls=no
set header_cache=""
set message_cachedir=""
set mail_check=1
set timeout=1
set imap_keepalive=30
set record=""
set postponed=""
set pager_stop=yes
set sort=date
`, strings.ReplaceAll(user, "@", "%40"), portOf(ts.srv.Addr("imap")), user, testPass)
	if err := os.WriteFile(muttrc, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tmux.sock")
	session := "agua-mutt"
	tm := func(args ...string) (string, error) {
		return runClient(t, dir, tmux, append([]string{"-S", sock}, args...)...)
	}
	if out, err := tm("new-session", "-d", "-s", session, "-x", "160", "-y", "40",
		"env", "HOME="+dir, "TERM=xterm", mutt, "-n", "-F", muttrc, "-e", "push <display-message>"); err != nil {
		t.Fatalf("tmux: %v\n%s", err, out)
	}
	t.Cleanup(func() { tm("kill-server") })
	var screen string
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := tm("capture-pane", "-p", "-t", session)
		screen = out
		if err == nil && strings.Contains(out, "body line of "+tok) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mutt did not show the message; screen:\n%s", screen)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustContain(t, screen, "Subject: mutt "+tok)
	tm("send-keys", "-t", session, "q", "q")
}
