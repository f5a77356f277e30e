package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/sys/unix"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/importer/dovecottest"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/server"
)

// TestMain lets a test run the CLI as a child process (AGUA_TEST_CLI=1:
// the arguments are the CLI's), which a test can kill -9.
func TestMain(m *testing.M) {
	if os.Getenv("AGUA_TEST_CLI") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	pgtest.Main(m)
}

// seedFolder is a source folder of the import test and where agua puts it.
type seedFolder struct {
	source, target string
	n              int
}

// seeded is one message put into Dovecot, and what agua must show of it;
// the tests know it by its Subject (some have no Message-ID).
type seeded struct {
	subject string
	target  string
	flags   []string // the IMAP flags agua shows, sorted
	date    int64
	// forwarded: $Forwarded on the source, the Maildir P flag in agua
	// (which IMAP does not show).
	forwarded bool
}

var importFolders = []seedFolder{
	{"INBOX", "INBOX", 400},
	{"Enviados", "Sent", 200}, // \Sent in Dovecot: agua's Sent
	{"Drafts", "Drafts", 100},
	{"Work/Projects", "Work.Projects", 200},
	{"Archive/2023", "Archive.2023", 100},
}

// seedDovecot APPENDs 1,000 messages over IMAP into five folders with a
// mix of flags, keywords and internal dates, plus three \Deleted ones in
// INBOX that the import skips.
func seedDovecot(t *testing.T, dv *dovecottest.Server) map[string]seeded {
	t.Helper()
	c, err := imapclient.DialInsecure(dv.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(dv.User, dv.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	want := map[string]seeded{}
	zone := time.FixedZone("", 2*3600)
	base := time.Date(2023, 1, 2, 3, 4, 5, 0, zone)
	i := 0
	for _, f := range importFolders {
		if f.source != "INBOX" {
			if err := c.Create(f.source, nil).Wait(); err != nil {
				t.Fatalf("CREATE %s: %v", f.source, err)
			}
		}
		n := f.n
		if f.source == "INBOX" {
			n += 3
		}
		for j := range n {
			i++
			subject := fmt.Sprintf("message %d", i)
			idField := fmt.Sprintf("Message-ID: <msg-%d@old.example>\r\n", i)
			if i%50 == 0 {
				idField = "" // recognised by size and date alone
			}
			var flags []imap.Flag
			var shown []string
			add := func(fl imap.Flag, visible bool) {
				flags = append(flags, fl)
				if visible {
					shown = append(shown, string(fl))
				}
			}
			if i%2 == 0 {
				add(imap.FlagSeen, true)
			}
			if i%3 == 0 {
				add(imap.FlagAnswered, true)
			}
			if i%5 == 0 {
				add(imap.FlagFlagged, true)
			}
			if f.source == "Drafts" {
				add(imap.FlagDraft, true)
			}
			if i%7 == 0 {
				add("$Forwarded", false) // kept as Maildir P, not an IMAP flag of agua
			}
			if i%11 == 0 {
				add("$Label1", false) // a keyword agua does not keep
			}
			deleted := f.source == "INBOX" && j >= f.n
			if deleted {
				add(imap.FlagDeleted, false)
			}
			body := fmt.Sprintf("From: someone@old.example\r\nTo: olduser@old.example\r\nSubject: %s\r\n%sDate: Mon, 2 Jan 2023 03:04:05 +0200\r\n\r\nmessage %d in %s\r\n", subject, idField, i, f.source)
			if i%97 == 0 {
				body += strings.Repeat("a longer line of text to make a larger message\r\n", 2000)
			}
			date := base.Add(time.Duration(i) * 37 * time.Minute)
			cmd := c.Append(f.source, int64(len(body)), &imap.AppendOptions{Flags: flags, Time: date})
			io.WriteString(cmd, body)
			cmd.Close()
			if _, err := cmd.Wait(); err != nil {
				t.Fatalf("APPEND: %v", err)
			}
			if !deleted {
				slices.Sort(shown)
				want[subject] = seeded{subject: subject, target: f.target, flags: shown, date: date.Unix(), forwarded: i%7 == 0}
			}
		}
	}
	if len(want) != 1000 {
		t.Fatalf("seeded %d messages, want 1000", len(want))
	}
	return want
}

// startImportServer runs a server with IMAP listeners (plain and TLS) on
// the data folder, with the users alice, bob and carol.
func startImportServer(t *testing.T, data string) (*server.Server, config.Config) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = data
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen, cfg.SMTP.SubmissionListen, cfg.SMTP.SubmissionsListen = nil, nil, nil
	cfg.Admin.Listen = ""
	cfg.POP3.Listen, cfg.POP3.TLSListen = nil, nil
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = []string{"127.0.0.1:0"}, []string{"127.0.0.1:0"}
	srv, _ := runServer(t, cfg, nil)
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	mustAgua(t, "alice's password\n", "user", "add", "alice@example.test", "-data", data)
	mustAgua(t, "bob's password\n", "user", "add", "bob@example.test", "-data", data)
	mustAgua(t, "carol's password\n", "user", "add", "carol@example.test", "-quota", "256KiB", "-data", data)
	return srv, cfg
}

// dumped is a message as imap_dump.py saw it.
type dumped struct {
	ID      string   `json:"id"`
	Subject string   `json:"subject"`
	Flags   []string `json:"flags"`
	Date    int64    `json:"date"`
}

// dumpIMAP reads a mailbox back over agua's IMAP with Python's imaplib.
func dumpIMAP(t *testing.T, addr, user, pass string) map[string][]dumped {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("/usr/bin/python3", "testdata/imap_dump.py", host, port, user, pass).CombinedOutput()
	if err != nil {
		t.Fatalf("imap_dump.py: %v\n%s", err, out)
	}
	var got map[string][]dumped
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("imap_dump.py output: %v\n%s", err, out)
	}
	return got
}

// checkImported compares what agua's IMAP shows with what was seeded:
// every folder's count (so no duplicates), each message's flags and
// internal date.
// rename maps a target folder to the one expected instead.
func checkImported(t *testing.T, srv *server.Server, user, pass string, want map[string]seeded, rename map[string]string) {
	t.Helper()
	got := dumpIMAP(t, srv.Addr("imap"), user, pass)
	counts := map[string]int{}
	want = maps.Clone(want)
	for k, w := range want {
		if r, ok := rename[w.target]; ok {
			w.target = r
			want[k] = w
		}
		counts[w.target]++
	}
	for target, n := range counts {
		if len(got[target]) != n {
			t.Errorf("folder %s: %d messages over IMAP, want %d", target, len(got[target]), n)
		}
	}
	seen := map[string]bool{}
	for folder, msgs := range got {
		for _, m := range msgs {
			w, ok := want[m.Subject]
			if !ok {
				t.Errorf("folder %s: unexpected message %q", folder, m.Subject)
				continue
			}
			if seen[m.Subject] {
				t.Errorf("folder %s: %s twice", folder, m.Subject)
			}
			seen[m.Subject] = true
			if w.target != folder {
				t.Errorf("%s in %s, want %s", m.Subject, folder, w.target)
			}
			if !slices.Equal(m.Flags, w.flags) && !(len(m.Flags) == 0 && len(w.flags) == 0) {
				t.Errorf("%s: flags %v, want %v", m.Subject, m.Flags, w.flags)
			}
			if m.Date != w.date {
				t.Errorf("%s: internal date %d, want %d", m.Subject, m.Date, w.date)
			}
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d of %d messages found over IMAP", len(seen), len(want))
	}
}

var progressLine = regexp.MustCompile(`^import: (\d+)/(\d+) messages`)

// importChild runs the CLI with args as a child process with a progress
// line per message, and calls at with each count; when at returns true
// the child is killed with SIGKILL. Its output goes to a pipe of one page:
// once the test stops reading, the child blocks on it, so it cannot run
// far ahead of the test. It returns the finished child and its output
// without the progress lines.
func importChild(t *testing.T, args []string, at func(n int) bool) (*exec.Cmd, string) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], append(args, "-progress-every", "1ns")...)
	child.Env = append(os.Environ(), "AGUA_TEST_CLI=1")
	child.Stderr, child.Stdout = pw, pw
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer pr.Close()
	var lines []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		m := progressLine.FindStringSubmatch(sc.Text())
		if m == nil {
			lines = append(lines, sc.Text()) // all but progress lines
		}
		if m != nil {
			if n, _ := strconv.Atoi(m[1]); at(n) {
				child.Process.Signal(syscall.SIGKILL)
				break
			}
		}
	}
	child.Wait()
	return child, strings.Join(lines, "\n")
}

// TestImportFromDovecot is the case: a Dovecot mailbox of 1,000
// messages in five folders is imported into agua while agua runs; the
// first run is killed with SIGKILL a third of the way, the second resumes;
// the result read back over agua's IMAP with imaplib has every folder's
// count, flags and internal dates; a third run copies nothing. Then the
// same Dovecot Maildir on disk is imported for another user.
func TestImportFromDovecot(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3")
	}
	dv := dovecottest.Start(t, "127.0.0.73")
	want := seedDovecot(t, dv)
	data := t.TempDir()
	srv, _ := startImportServer(t, data)
	passFile := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(passFile, []byte(dv.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"import", "imap", "-from", dv.Addr, "-user", dv.User, "-pass-file", passFile, "-plain",
		"-to", "alice@example.test", "-data", data}

	// First run, as a child process killed with SIGKILL mid-way.
	killedAt := 0
	child, lines := importChild(t, args, func(n int) bool {
		if n >= 300 {
			killedAt = n
			return true
		}
		return false
	})
	if killedAt == 0 {
		t.Fatalf("the first import ended before 300 messages:\n%s", lines)
	}
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the first import was not killed: %v", child.ProcessState)
	}
	t.Logf("first import killed with SIGKILL after %d messages", killedAt)

	// An IMAP session of alice keeps INBOX selected during the second run,
	// and APPENDs a message to it while the import (another process, with
	// its own copy of the folder's UID index) is appending there too.
	session, err := imapclient.DialInsecure(srv.Addr("imap"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	if err := session.Login("alice@example.test", "alice's password").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := session.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	const extra = "Message-ID: <meanwhile@new.example>\r\nSubject: meanwhile\r\n\r\nhello\r\n"
	appended := false

	// Second run resumes: what is missing only. The message is appended
	// after 5 of INBOX's 100 missing messages; the child can be at most a
	// pipe's worth of progress lines (4 KiB, fewer than 80 lines) ahead of the test.
	child, out := importChild(t, args, func(n int) bool {
		if n == 5 {
			cmd := session.Append("INBOX", int64(len(extra)), nil)
			io.WriteString(cmd, extra)
			cmd.Close()
			if _, err := cmd.Wait(); err != nil {
				t.Errorf("APPEND during the import: %v", err)
			}
			appended = true
		}
		return false
	})
	if !child.ProcessState.Success() || !appended {
		t.Fatalf("second run: %v, appended %v:\n%s", child.ProcessState, appended, out)
	}
	t.Logf("second run:\n%s", out)
	total := regexp.MustCompile(`(?m)^\s*total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$`)
	m := total.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no total line in the summary:\n%s", out)
	}
	if m[1] != "1003" || m[4] != "3" {
		t.Fatalf("summary: %s source messages, %s deleted; want 1003 and 3:\n%s", m[1], m[4], out)
	}
	copied, _ := strconv.Atoi(m[2])
	present, _ := strconv.Atoi(m[3])
	if copied+present != 1000 || present < killedAt || copied == 0 {
		t.Fatalf("second run copied %d and found %d present; the first had done %d:\n%s", copied, present, killedAt, out)
	}
	if strings.Contains(out, "MISSING") || !strings.Contains(out, "$Label1 (91)") || strings.Contains(out, "$Forwarded") {
		t.Fatalf("summary:\n%s", out)
	}
	// The session that was open all along sees the same UIDs as new ones.
	uidsOf := func(c *imapclient.Client) map[imap.UID]string {
		t.Helper()
		bufs, err := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		m := map[imap.UID]string{}
		for _, b := range bufs {
			m[b.UID] = b.Envelope.Subject
		}
		return m
	}
	fresh, err := imapclient.DialInsecure(srv.Addr("imap"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Login("alice@example.test", "alice's password").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := session.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	old, now := uidsOf(session), uidsOf(fresh)
	if len(old) != 401 || !maps.Equal(old, now) {
		t.Fatalf("INBOX: the open session sees %d messages, a new one %d, or other UIDs", len(old), len(now))
	}
	// The extra message goes again, for the checks below.
	var extraUID imap.UID
	for uid, id := range old {
		if id == "meanwhile" {
			extraUID = uid
		}
	}
	if err := session.Store(imap.UIDSetNum(extraUID), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := session.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	checkImported(t, srv, "alice@example.test", "alice's password", want, nil)

	// $Forwarded became the Maildir P flag on disk.
	forwarded, withP := 0, 0
	for _, w := range want {
		if w.forwarded {
			forwarded++
		}
	}
	filepath.WalkDir(filepath.Join(data, "mail", "example.test", "alice"), func(p string, d os.DirEntry, err error) error {
		if _, info, ok := strings.Cut(d.Name(), ":2,"); ok && strings.Contains(info, "P") {
			withP++
		}
		return nil
	})
	if withP != forwarded || forwarded == 0 {
		t.Errorf("%d files with the P flag, want %d", withP, forwarded)
	}

	// A third run finds everything there.
	out = mustAgua(t, "", args...)
	if m := total.FindStringSubmatch(out); m == nil || m[2] != "0" || m[3] != "1000" {
		t.Fatalf("third run:\n%s", out)
	}
	checkImported(t, srv, "alice@example.test", "alice's password", want, nil)

	// The same mailbox from Dovecot's Maildir on disk (Maildir++ folders,
	// flags in file names, keywords in dovecot-keywords, with $Forwarded
	// kept as P), for bob.
	dv.Stop()
	out = mustAgua(t, "", "import", "maildir", dv.Mail, "-to", "bob@example.test", "-data", data)
	t.Logf("maildir import:\n%s", out)
	if m := total.FindStringSubmatch(out); m == nil || m[1] != "1003" || m[2] != "1000" || m[4] != "3" ||
		!strings.Contains(out, "$Label1 (91)") || strings.Contains(out, "$Forwarded") {
		t.Fatalf("maildir import:\n%s", out)
	}
	// On disk, nothing says that Enviados is the Sent folder.
	checkImported(t, srv, "bob@example.test", "bob's password", want, map[string]string{"Sent": "Enviados"})
	out = mustAgua(t, "", "import", "maildir", dv.Mail, "-to", "bob@example.test", "-data", data)
	if m := total.FindStringSubmatch(out); m == nil || m[2] != "0" || m[3] != "1000" {
		t.Fatalf("maildir import again:\n%s", out)
	}

	// agua as the source, over TLS: implicit TLS on IMAPS and STARTTLS on
	// IMAP, its self-signed certificate accepted with -insecure only.
	alicePass := filepath.Join(t.TempDir(), "alice")
	if err := os.WriteFile(alicePass, []byte("alice's password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromAlice := func(addr string, more ...string) []string {
		return append([]string{"import", "imap", "-from", addr, "-user", "alice@example.test", "-pass-file", alicePass, "-data", data}, more...)
	}
	code, _, errs := agua(t, "", fromAlice(srv.Addr("imaps"), "-tls", "-to", "carol@example.test")...)
	if code != 1 || !strings.Contains(errs, "certificate") {
		t.Fatalf("TLS to a self-signed certificate without -insecure: exit %d, %s", code, errs)
	}
	// bob's Drafts came from the same Dovecot mailbox: a first import from
	// another source finds every message already there.
	out = mustAgua(t, "", fromAlice(srv.Addr("imaps"), "-tls", "-insecure", "-folders", "Drafts", "-to", "bob@example.test")...)
	if m := total.FindStringSubmatch(out); m == nil || m[1] != "100" || m[2] != "0" || m[3] != "100" {
		t.Fatalf("import from agua over TLS into bob:\n%s", out)
	}
	out = mustAgua(t, "", fromAlice(srv.Addr("imap"), "-starttls", "-insecure", "-folders", "Sent,Work.Projects", "-to", "carol@example.test")...)
	if m := total.FindStringSubmatch(out); m == nil || m[1] != "400" || m[2] != "400" || !strings.Contains(out, "Work.Projects  Work.Projects") ||
		!strings.Contains(out, "Warning: carol@example.test now uses") {
		t.Fatalf("import from agua with STARTTLS into carol:\n%s", out)
	}
}

// TestImportRefusesForeignDataFolder: an import as another user than the
// data folder's owner would leave files the server cannot change.
func TestImportRefusesForeignDataFolder(t *testing.T) {
	data := t.TempDir()
	if err := os.Chown(data, 65534, 65534); err != nil {
		t.Skipf("needs root to give the folder away: %v", err)
	}
	md := t.TempDir()
	for _, sub := range []string{"cur", "new", "tmp"} {
		os.Mkdir(filepath.Join(md, sub), 0o755)
	}
	code, _, errs := agua(t, "", "import", "maildir", md, "-to", "ann@example.test", "-data", data)
	if code != 1 || !strings.Contains(errs, "run the import as its owner") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	code, _, errs = agua(t, "", "import", "maildir", md, "-data", t.TempDir())
	if code != 2 || !strings.Contains(errs, "import imap -from") {
		t.Fatalf("without -to: exit %d: %s", code, errs)
	}
}
