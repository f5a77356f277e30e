package server

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// postfixMTA is a private Postfix instance (its own configuration, queue
// and log in a temporary folder) that relays everything to one host:port
// from the source address 127.0.0.22: the sending MTA of a real domain.
type postfixMTA struct {
	dir string
}

func startPostfix(t *testing.T, relay string) *postfixMTA {
	t.Helper()
	bin := "/usr/sbin/postfix"
	if _, err := os.Stat(bin); err != nil {
		msg := "Postfix not installed (Debian package postfix; .ci/run installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
	pu, err := user.Lookup("postfix")
	if os.Geteuid() != 0 || err != nil {
		t.Skip("SKIP: a private Postfix instance needs root and the postfix user")
	}
	// Postfix's daemons (user postfix) must reach the folder: not t.TempDir.
	dir, err := os.MkdirTemp("", "agua-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	p := &postfixMTA{dir: dir}
	data := filepath.Join(dir, "data")
	for _, d := range []string{data, filepath.Join(dir, "queue")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(pu.Uid)
	os.Chown(data, uid, -1)
	mainCF := fmt.Sprintf(`queue_directory = %[1]s/queue
data_directory = %[1]s/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
compatibility_level = 3.6
myhostname = mx.bank.example
mydomain = bank.example
myorigin = bank.example
mydestination =
alias_maps =
alias_database =
local_transport = error:no local delivery
inet_interfaces = loopback-only
inet_protocols = ipv4
smtp_bind_address = 127.0.0.22
relayhost = [%[2]s]:%[3]s
smtp_dns_support_level = disabled
smtp_tls_security_level = none
maillog_file_prefixes = %[1]s
maillog_file = %[1]s/maillog
`, dir, strings.Split(relay, ":")[0], strings.Split(relay, ":")[1])
	// Debian's master.cf without its SMTP listener and without chroot
	// (a chroot would need a copy of the system files in the queue).
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		t.Fatal(err)
	}
	var mcf strings.Builder
	for line := range strings.Lines(string(master)) {
		f := strings.Fields(line)
		if len(f) >= 8 && line[0] != ' ' && line[0] != '#' && line[0] != '\t' {
			if f[0] == "smtp" && f[1] == "inet" {
				continue
			}
			f[4] = "n"
			line = strings.Join(f, " ") + "\n"
		}
		mcf.WriteString(line)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.cf"), []byte(mcf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", dir, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
		os.RemoveAll(dir)
		t.Fatalf("postfix start: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(func() {
		exec.Command(bin, "-c", dir, "stop").Run()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Logf("postfix log:\n%s", log)
		}
		os.RemoveAll(dir)
	})
	return p
}

// send hands msg to Postfix with its sendmail command.
func (p *postfixMTA) send(t *testing.T, from, rcpt, msg string) {
	t.Helper()
	cmd := exec.Command("/usr/sbin/sendmail", "-C", p.dir, "-f", from, rcpt)
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
}

func (p *postfixMTA) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// waitPostfix polls cond for up to a minute (Postfix's queue manager, on
// a loaded machine); nothing is timed.
func waitPostfix(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Interop: Postfix as the sending MTA of bank.example (SPF: 127.0.0.22)
// and of a spoofer. Its legitimate, DKIM-signed message arrives with
// spf=pass dkim=pass dmarc=pass; a spoofed p=reject message is refused
// with 550 5.7.1 and Postfix bounces it with agua's reason; a spoofed
// p=quarantine one is delivered to Junk.
func TestPostfixSendsToAgua(t *testing.T) {
	w := newAuthWorld(t)
	ts := w.start(t, nil)
	pf := startPostfix(t, ts.srv.Addr("smtp"))

	legit := authMsg("Alice <alice@bank.example>", "via postfix", "")
	sig, err := w.signer.Sign("alice@bank.example", []byte(legit))
	if err != nil || sig == nil {
		t.Fatalf("sign: %v", err)
	}
	pf.send(t, "alice@bank.example", testUser, string(sig)+legit)
	pf.send(t, "x@evil.example", testUser, authMsg("Bank <security@bank.example>", "spoof via postfix", ""))
	pf.send(t, "x@evil.example", testUser, authMsg("deals@shop.example", "junk via postfix", ""))

	var inbox []string
	waitPostfix(t, "the legitimate message", func() bool {
		inbox = ts.messages(t, testUser)
		return len(inbox) > 0
	})
	hdr, _, _ := strings.Cut(inbox[0], "\r\n\r\n")
	for _, want := range []string{"Subject: via postfix", "by mx.agua.test", "spf=pass smtp.mailfrom=alice@bank.example", "dkim=pass header.d=bank.example", "dmarc=pass"} {
		if !strings.Contains(hdr, want) {
			t.Fatalf("message from Postfix lacks %q:\n%s", want, hdr)
		}
	}
	waitPostfix(t, "Postfix to bounce the spoof with agua's 550", func() bool {
		l := pf.log()
		return strings.Contains(l, "status=bounced") && strings.Contains(l, "550 5.7.1 Message refused: bank.example asks receivers to reject mail that fails DMARC")
	})
	junkDir := filepath.Join(ts.cfg.DataDir, "mail", testDomain, strings.Split(testUser, "@")[0], ".Junk", "new")
	waitPostfix(t, "the quarantined message in Junk", func() bool {
		files, _ := filepath.Glob(filepath.Join(junkDir, "*"))
		return len(files) == 1
	})
	if got := ts.messages(t, testUser); len(got) != 1 {
		t.Fatalf("INBOX holds %d messages, want only the legitimate one", len(got))
	}
}
