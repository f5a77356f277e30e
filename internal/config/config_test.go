package config

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExampleParsesToDefault(t *testing.T) {
	got, err := Parse("example.toml", []byte(Example()))
	if err != nil {
		t.Fatal(err)
	}
	// Compared as rendered TOML: an empty list parses as an empty slice
	// where the default has nil, which means the same.
	if r := render(got); r != Example() {
		t.Fatalf("example does not round-trip:\n%s", r)
	}
	got.SMTP.MaxRecipients++
	if render(got) == Example() {
		t.Fatal("render ignores a changed value")
	}
}

func TestDefaultIsValid(t *testing.T) {
	if ps := Default().Validate(); len(ps) > 0 {
		t.Fatal(ps)
	}
}

// Every problem is reported, each with file, line and key.
func TestCheckReportsEveryProblemWithLocation(t *testing.T) {
	src := `data_dir = "x"

[smtp]
max_recipients = 0
max_message_size = "12 parsecs"
`
	_, err := Parse("bad.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	// A value the decoder cannot read does not hide the others.
	if len(ce.Problems) != 2 || ce.Problems[0].Line != 4 || ce.Problems[1].Line != 5 {
		t.Fatalf("problems: %v", ce.Problems)
	}

	src = `data_dir = ""
hostnme = "typo"

[smtp]
max_recipients = 0
max_command_length = 100
listen = ["nonsense"]

[shield.limits]
per_ip_conns = 0
`
	_, err = Parse("bad.toml", []byte(src))
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	want := map[string]int{
		"data_dir":                   1,
		"hostnme":                    2,
		"smtp.max_recipients":        5,
		"smtp.max_command_length":    6,
		"smtp.listen":                7,
		"shield.limits.per_ip_conns": 10,
	}
	got := map[string]int{}
	for _, p := range ce.Problems {
		if p.File != "bad.toml" {
			t.Errorf("problem without file: %v", p)
		}
		got[p.Key] = p.Line
	}
	for k, line := range want {
		if got[k] != line {
			t.Errorf("%s: want line %d, got %d (all: %v)", k, line, got[k], ce.Problems)
		}
	}
}

// Several undecodable values and a bare-number duration are all reported,
// in line order.
func TestCheckReportsEveryDecodeProblem(t *testing.T) {
	src := `[smtp]
command_timeout = 300
data_timeout = "3 s"
max_message_size = "lots"

[shield]
default_action = "block"
ban_ttl = 600
`
	_, err := Parse("bad.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	var lines []int
	for _, p := range ce.Problems {
		lines = append(lines, p.Line)
	}
	if want := []int{2, 3, 4, 7, 8}; !slices.Equal(lines, want) {
		t.Fatalf("problem lines %v, want %v:\n%v", lines, want, ce)
	}
	if !strings.Contains(ce.Error(), `a duration needs a unit`) {
		t.Fatalf("bare number not explained:\n%v", ce)
	}
}

// A value of the wrong type reads the same in every section, the shield's
// thresholds (decoded by the shield itself) and sizes included: file:line,
// key, the type wanted and the value given with its type.
func TestWrongTypeWordedAlikeEverywhere(t *testing.T) {
	src := `[smtp]
max_errors = "ten"
max_message_size = true
max_connections = 1.5
[log]
level = 5
[shield.limits]
per_ip_conns = "ten"  # a comment
[shield.thresholds.message]
count = "ten"
[shield.thresholds.pregreet]
dry_run = "yes"
[shield.thresholds.recipient]
window = 5
`
	want := []string{
		`types.toml:2: smtp.max_errors: wrong type: want a number, got "ten" (a string)`,
		`types.toml:3: smtp.max_message_size: wrong type: want a number of bytes or a size such as "25MiB", got true (true or false)`,
		`types.toml:4: smtp.max_connections: wrong type: want a number, got 1.5 (a decimal number)`,
		`types.toml:6: log.level: wrong type: want a string, got 5 (a number)`,
		`types.toml:8: shield.limits.per_ip_conns: wrong type: want a number, got "ten" (a string)`,
		`types.toml:10: shield.thresholds.message.count: wrong type: want a number, got "ten" (a string)`,
		`types.toml:12: shield.thresholds.pregreet.dry_run: wrong type: want true or false, got "yes" (a string)`,
		`types.toml:14: shield.thresholds.recipient.window: a duration needs a unit, as a string: e.g. "30s", "5m", "24h" (a bare number would be nanoseconds)`,
	}
	wantProblems(t, "types.toml", src, want)
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"512": 512, "64KiB": 64 << 10, "25MiB": 25 << 20, "1g": 1 << 30, "10MB": 10e6, "1.5KiB": 1536} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%s: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "abc", "1 parsec"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	cfg, err := Parse("x", []byte("[smtp]\nmax_message_size = 1048576\ncommand_timeout = \"90s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SMTP.MaxMessageSize != 1<<20 || cfg.SMTP.CommandTimeout != 90*time.Second {
		t.Fatalf("got %v %v", cfg.SMTP.MaxMessageSize, cfg.SMTP.CommandTimeout)
	}
}

// docs/config.md is generated; it must match the schema.
func TestReferenceIsCurrent(t *testing.T) {
	b, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != Reference() {
		t.Fatal("docs/config.md is stale: run `go run ./cmd/agua config doc > docs/config.md`")
	}
}

// Every TOML example in the docs parses (CoreDNS readme_test style).
func TestDocExamplesParse(t *testing.T) {
	block := regexp.MustCompile("(?s)```toml\n(.*?)```")
	for _, f := range []string{"../../README.md", "../../docs/config.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range block.FindAllStringSubmatch(string(b), -1) {
			if _, err := Parse(f, []byte(m[1])); err != nil {
				t.Errorf("%s: toml block %d: %v\n%s", f, i+1, err, strings.TrimSpace(m[1]))
			}
		}
	}
}

// The demo account is on only in the embedded defaults; a config file asks
// for it, and is refused when a listener is off loopback.
func TestDemoOnlyOnLoopback(t *testing.T) {
	cfg, err := Parse("prod.toml", []byte("[smtp]\nlisten = [\"0.0.0.0:25\"]\n"))
	if err != nil || cfg.Accounts.Demo {
		t.Fatalf("a config without demo: demo %v, %v", cfg.Accounts.Demo, err)
	}
	if cfg, err := Parse("local.toml", []byte("[accounts]\ndemo = true\n[smtp]\nlisten = [\"localhost:2526\"]\n")); err != nil || !cfg.Accounts.Demo {
		t.Fatalf("demo on loopback: demo %v, %v", cfg.Accounts.Demo, err)
	}
	_, err = Parse("demo.toml", []byte("[accounts]\ndemo = true\n[imap]\ntls_listen = [\":993\"]\n"))
	if err == nil || !strings.Contains(err.Error(), `demo.toml:2: accounts.demo: `) || !strings.Contains(err.Error(), `imap.tls_listen = ":993"`) {
		t.Fatalf("demo off loopback: %v", err)
	}
}

// Listeners clash when they share a port and an address, or one of them
// listens on every address; port 0 never clashes.
func TestListenerClashes(t *testing.T) {
	for _, tc := range []struct {
		a, b  string
		clash bool
	}{
		{"127.0.0.1:25", "127.0.0.1:25", true},
		{"0.0.0.0:25", "127.0.0.1:25", true},
		{"[::]:25", "127.0.0.2:25", true},
		{"localhost:25", "127.0.0.1:25", true},
		{"127.0.0.1:25", "127.0.0.2:25", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{"127.0.0.1:25", "127.0.0.1:26", false},
	} {
		c := Default()
		c.SMTP.Listen, c.SMTP.SubmissionListen = []string{tc.a}, []string{tc.b}
		got := false
		for _, p := range c.Validate() {
			got = got || p.Key == "smtp.submission_listen" && strings.Contains(p.Msg, "clashes")
		}
		if got != tc.clash {
			t.Errorf("%s and %s: clash %v, want %v", tc.a, tc.b, got, tc.clash)
		}
	}
}

// An unknown key names the closest known key of its table when it is a
// likely typo, and nothing when no key is close.
func TestUnknownKeyDidYouMean(t *testing.T) {
	src := "[shild]\n[smtp]\nmax_conections = 5\nzzz = 1\nmax_errros = 3\n[log]\nlvel = \"info\"\n[shield.limits]\nper_ip_con = 4\n[imap]\nx = 1\n"
	want := []string{
		"keys.toml:1: shild: unknown key (did you mean shield?)",
		"keys.toml:3: smtp.max_conections: unknown key (did you mean max_connections?)",
		"keys.toml:4: smtp.zzz: unknown key",
		"keys.toml:5: smtp.max_errros: unknown key (did you mean max_errors?)",
		"keys.toml:7: log.lvel: unknown key (did you mean level?)",
		"keys.toml:9: shield.limits.per_ip_con: unknown key (did you mean per_ip_conns?)",
		"keys.toml:11: imap.x: unknown key",
	}
	wantProblems(t, "keys.toml", src, want)
}

// A listener's port past 65535 is named as out of range, not as a
// malformed address; a name for a port is not a number.
func TestListenPortOutOfRange(t *testing.T) {
	src := "[smtp]\nlisten = [\"127.0.0.1:99999\", \"127.0.0.1:smtp\", \"nohost\"]\n[admin]\nlisten = \"127.0.0.1:70000\"\n"
	want := []string{
		`ports.toml:2: smtp.listen: "127.0.0.1:99999": port 99999 is out of range 1-65535`,
		`ports.toml:2: smtp.listen: "127.0.0.1:smtp": port "smtp" is not a number`,
		`ports.toml:2: smtp.listen: "nohost" is not host:port`,
		`ports.toml:4: admin.listen: "127.0.0.1:70000": port 70000 is out of range 1-65535`,
	}
	wantProblems(t, "ports.toml", src, want)
}

// wantProblems parses src, which must fail with exactly the problems want,
// as text, in order.
func wantProblems(t *testing.T, name, src string, want []string) {
	t.Helper()
	_, err := Parse(name, []byte(src))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	got := make([]string, len(ce.Problems))
	for i, p := range ce.Problems {
		got[i] = p.String()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
