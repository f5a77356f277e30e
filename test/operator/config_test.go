// Package operator holds end-to-end tests of a new operator's first day
// (issue 19): the real agua binary, run as the README says, on loopback.
package operator

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/tlsutil"
	"github.com/agua-mail/agua/test/internal/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// run runs the agua binary with args and returns its exit code and
// combined output.
func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatalf("agua %v: %v", args, err)
	}
	return 0, string(out)
}

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Item 3: a TOML syntax error is one problem at the right line; a value of
// the wrong type is file:line: key: problem; two listeners on one port are
// caught before serve fails to bind them.
func TestConfigCheckReportsEachProblemOnce(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		want       []string // each must appear exactly once
		count      string
	}{
		{"syntax.toml", "data_dir = \"x\"\n[smtp\nmax_errors = 3\n", []string{"syntax.toml:2: TOML syntax: "}, "1 config problem(s)"},
		{"array.toml", "[smtp]\nlisten = [\"127.0.0.1:2525\"\nmax_errors = 3\n", []string{"array.toml:3: TOML syntax: "}, "1 config problem(s)"},
		{"types.toml", "[smtp]\nmax_errors = \"ten\"\nmax_recipients = true\n", []string{
			`types.toml:2: smtp.max_errors: wrong type: want a number, got "ten" (a string)`,
			"types.toml:3: smtp.max_recipients: wrong type: want a number, got true (true or false)",
		}, "2 config problem(s)"},
		{"clash.toml", "[smtp]\nlisten = [\"127.0.0.1:2525\"]\nsubmission_listen = [\"127.0.0.1:2525\"]\n[pop3]\nlisten = [\"0.0.0.0:2465\"]\n", []string{
			`clash.toml:3: smtp.submission_listen: "127.0.0.1:2525" clashes with smtp.listen = "127.0.0.1:2525"`,
			`clash.toml:5: pop3.listen: "0.0.0.0:2465" clashes with smtp.submissions_listen = "127.0.0.1:2465"`,
		}, ""},
	} {
		code, out := run(t, "config", "check", write(t, dir, tc.name, tc.text))
		if code == 0 {
			t.Errorf("%s: exit 0:\n%s", tc.name, out)
		}
		for _, w := range tc.want {
			if n := strings.Count(out, w); n != 1 {
				t.Errorf("%s: %q appears %d times in:\n%s", tc.name, w, n, out)
			}
		}
		if tc.count != "" && !strings.Contains(out, tc.count) {
			t.Errorf("%s: want %q in:\n%s", tc.name, tc.count, out)
		}
	}
}

// Item 2: a rule file path that does not exist stops config check and
// serve; a missing rule file directly in data_dir is fine (serve creates
// it). Item 3: an unreadable certificate stops both too.
func TestMissingRuleFileStopsCheckAndServe(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := write(t, dir, "agua.toml", fmt.Sprintf("data_dir = %q\n[smtp]\nlisten = [\"127.0.0.1:0\"]\nsubmission_listen = []\nsubmissions_listen = []\n[pop3]\nlisten = []\ntls_listen = []\n[imap]\nlisten = []\ntls_listen = []\n[admin]\nlisten = \"\"\n[shield]\nrule_files = [\"shield.rules\", %q]\n",
		data, filepath.Join(dir, "shield.rulez")))
	want := "agua.toml:15: shield.rule_files: " + filepath.Join(dir, "shield.rulez") + " does not exist"
	for _, verb := range [][]string{{"config", "check", cfg}, {"serve", "-config", cfg}} {
		code, out := run(t, verb...)
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("agua %s: exit %d, want %q in:\n%s", verb[0], code, want, out)
		}
	}
	certs := write(t, dir, "certs.toml", fmt.Sprintf("data_dir = %q\n[tls]\ncert_file = %q\nkey_file = %q\n", data, write(t, dir, "cert.pem", "not a certificate"), filepath.Join(dir, "key.pem")))
	for _, verb := range [][]string{{"config", "check", certs}, {"serve", "-config", certs}} {
		code, out := run(t, verb...)
		if code == 0 || !strings.Contains(out, "certs.toml:3: tls.cert_file: ") {
			t.Errorf("agua %s with a bad certificate: exit %d:\n%s", verb[0], code, out)
		}
	}
}

// Item 1: demo = true is refused on a server that listens off loopback, and
// a config file that does not ask for it has no demo account.
func TestDemoOnlyOnLoopback(t *testing.T) {
	dir := t.TempDir()
	cfg := write(t, dir, "demo.toml", "[accounts]\ndemo = true\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n")
	code, out := run(t, "config", "check", cfg)
	if code == 0 || !strings.Contains(out, "demo.toml:2: accounts.demo: ") || !strings.Contains(out, `smtp.listen = "0.0.0.0:25"`) {
		t.Errorf("demo off loopback: exit %d:\n%s", code, out)
	}
}

// Item 1: the README's production example, with its addresses moved to free
// loopback ports and its paths into a temporary folder, starts a server
// with no demo account and prints no password.
func TestReadmeProductionExampleHasNoDemo(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var example string
	for _, m := range regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(string(readme), -1) {
		if strings.Contains(m[1], "hostname = ") && strings.Contains(m[1], "[tls]") {
			example = m[1]
		}
	}
	if example == "" {
		t.Fatal("README.md has no production config example (a toml block with hostname and [tls])")
	}
	srv := harness.New(t, harness.Options{})
	if _, _, err := tlsutil.LoadOrCreate(filepath.Join(srv.Dir, "fullchain.pem"), filepath.Join(srv.Dir, "privkey.pem"), []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	write(t, srv.Dir, "shield.rules", "deny 203.0.113.0/24\n")
	r := strings.NewReplacer(
		`"/var/lib/agua"`, fmt.Sprintf("%q", srv.DataDir),
		`"/etc/agua/`, fmt.Sprintf("%q", srv.Dir+"/")[:len(srv.Dir)+2],
		`"0.0.0.0:25"`, fmt.Sprintf("%q", srv.SMTP),
		`"0.0.0.0:587"`, fmt.Sprintf("%q", srv.Submission),
		`"0.0.0.0:465"`, fmt.Sprintf("%q", srv.Submissions),
		// The harness reads the banner within a second.
		`banner_delay = "3s"`, `banner_delay = "0s"`,
	)
	text := r.Replace(example)
	if strings.Contains(text, "0.0.0.0") || strings.Contains(text, "/etc/agua") {
		t.Fatalf("the test does not know every address or path of the README example:\n%s", text)
	}
	text += fmt.Sprintf("\n[pop3]\nlisten = [%q]\ntls_listen = [%q]\n[imap]\nlisten = [%q]\ntls_listen = [%q]\n[admin]\nlisten = %q\n",
		srv.POP3, srv.POP3S, srv.IMAP, srv.IMAPS, srv.Admin)
	write(t, srv.Dir, "agua.toml", text)
	srv.Start(t)
	if out := srv.Agua(t, "", "domain", "list"); strings.TrimSpace(out) != "" {
		t.Errorf("the README's production config created domains: %q", out)
	}
	srv.Stop(t)
	if log := srv.Log(); strings.Contains(log, "demo@example.test") || strings.Contains(strings.ToLower(log), "password") {
		t.Errorf("the production start printed a demo account:\n%s", log)
	}
}
