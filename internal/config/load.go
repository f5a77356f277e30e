package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Problem is one thing wrong with a configuration, located where possible.
type Problem struct {
	File string // "" when not from a file
	Line int    // 0 when unknown
	Key  string // dotted key, e.g. "smtp.max_recipients"
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error carries every problem found in one configuration.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d config problem(s):\n  %s", len(lines), strings.Join(lines, "\n  "))
}

// Load reads a TOML file over the defaults and validates the result. The
// returned error is an *Error listing every problem with file and line.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return Parse(path, data)
}

// Parse is Load for bytes already read; name is used in problem locations.
func Parse(name string, data []byte) (Config, error) {
	probs, cfg, md := decodeAll(name, data)
	lines := keyLines(data)
	bareDurations := map[string]bool{}
	if md != nil {
		// The demo account belongs to the embedded defaults: a config
		// file has it only when it asks for it.
		if !md.IsDefined("accounts", "demo") {
			cfg.Accounts.Demo = false
		}
		var known map[string][]string
		for _, k := range md.Undecoded() {
			key := k.String()
			if known == nil {
				known = knownKeys()
			}
			msg := "unknown key"
			if s := didYouMean(key, known); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			probs = append(probs, Problem{File: name, Line: lines.find(key), Key: key, Msg: msg})
		}
		// BurntSushi/toml reads a bare integer as nanoseconds; an operator
		// writing idle_timeout = 1800 means seconds. Refuse it.
		durations := durationKeys()
		for _, k := range md.Keys() {
			if durations[k.String()] && md.Type(k...) == "Integer" {
				probs = append(probs, Problem{File: name, Line: lines.find(k.String()), Key: k.String(),
					Msg: `a duration needs a unit, as a string: e.g. "30s", "5m", "24h" (a bare number would be nanoseconds)`})
				bareDurations[k.String()] = true
			}
		}
	}
	for _, p := range cfg.Validate() {
		if bareDurations[p.Key] {
			continue // said above, better
		}
		p.File = name
		p.Line = lines.find(p.Key)
		probs = append(probs, p)
	}
	if len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
		return Config{}, &Error{Problems: probs}
	}
	return cfg, nil
}

// decodeAll decodes data over the defaults. A syntax error stops the
// decoder for good, so it is reported once, alone. A value of the wrong
// type or form stops it too, but the rest of the file is still worth
// checking: the offending line is blanked and decoding runs again, up to a
// bound, so every such value is reported.
func decodeAll(name string, data []byte) ([]Problem, Config, *toml.MetaData) {
	if _, err := toml.Decode(string(data), new(map[string]any)); err != nil {
		return []Problem{syntaxProblem(name, data, err)}, Default(), nil
	}
	var probs []Problem
	text := append([]byte(nil), data...)
	for range maxDecodeProblems {
		cfg := Default()
		md, err := toml.NewDecoder(bytes.NewReader(text)).Decode(&cfg)
		if err == nil {
			return probs, cfg, &md
		}
		p, ok := valueProblem(name, text, err)
		if !ok {
			return append(probs, p), cfg, nil
		}
		probs = append(probs, p)
		if !blankLine(text, p.Line) {
			return probs, cfg, nil
		}
	}
	return probs, Default(), nil
}

// maxDecodeProblems bounds how many undecodable values one check reports.
const maxDecodeProblems = 100

// syntaxProblem locates a TOML syntax error. The parser counts a newline
// it did not expect as the start of the next line; the mistake is on the
// line that newline ends, so the line is taken from the byte offset.
func syntaxProblem(name string, data []byte, err error) Problem {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return Problem{File: name, Msg: "TOML syntax: " + err.Error()}
	}
	line := pe.Position.Line
	if off := pe.Position.Start; off > 0 && off <= len(data) {
		line = 1 + bytes.Count(data[:off], []byte("\n"))
	}
	return Problem{File: name, Line: line, Msg: "TOML syntax: " + pe.Message}
}

// typeErr matches the decoder's type errors, which are plain text:
// `toml: line 2 (last key "smtp.max_errors"): incompatible types: ...`.
var typeErr = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

// typeWords names the decoder's type words (TOML's and Go's) for an operator.
var typeWords = map[string]string{
	"integer": "a number", "Integer": "a number", "int64": "a number",
	"float": "a decimal number", "Float": "a decimal number", "float64": "a decimal number",
	"string": "a string", "String": "a string",
	"bool": "true or false", "Bool": "true or false",
	"Array": "a list", "slice": "a list", "[]interface {}": "a list",
	"Hash": "a table", "struct": "a table", "map[string]interface {}": "a table",
	"Datetime": "a date-time", "time.Time": "a date-time",
}

func typeWord(t string) string {
	if w, ok := typeWords[t]; ok {
		return w
	}
	return t
}

// wrongType is the one wording of a value of the wrong type, in every
// section: `wrong type: want a number, got "ten" (a string)`. got is the
// value as written in the file ("" when unknown), gotType its type word.
func wrongType(want, got, gotType string) string {
	if got == "" {
		return "wrong type: want " + want + ", got " + typeWord(gotType)
	}
	return "wrong type: want " + want + ", got " + got + " (" + typeWord(gotType) + ")"
}

// lineValue is the value written on line n (1-based) of text, after its
// "key =", without a trailing comment; "" when there is none or it is long.
func lineValue(text []byte, n int) string {
	lines := bytes.Split(text, []byte("\n"))
	if n < 1 || n > len(lines) {
		return ""
	}
	_, v, ok := strings.Cut(string(lines[n-1]), "=")
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return ""
	}
	switch v[0] {
	case '"':
		v, _ = strconv.QuotedPrefix(v)
	case '\'':
		if i := strings.IndexByte(v[1:], '\''); i >= 0 {
			v = v[:i+2]
		}
	default:
		v, _, _ = strings.Cut(v, "#")
		v = strings.TrimSpace(v)
	}
	if len(v) > 40 {
		return ""
	}
	return v
}

// valueProblem turns a decoder error about one value into a Problem with
// line and key; ok is false when the error cannot be located.
func valueProblem(name string, text []byte, err error) (p Problem, ok bool) {
	p = Problem{File: name, Msg: err.Error()}
	var pe toml.ParseError
	if errors.As(err, &pe) && pe.Position.Line > 0 {
		p.Line, p.Key, p.Msg = pe.Position.Line, pe.LastKey, pe.Message
		return p, true
	}
	m := typeErr.FindStringSubmatch(err.Error())
	if m == nil || m[1] == "" {
		return p, false
	}
	p.Line, _ = strconv.Atoi(m[1])
	p.Key, p.Msg = m[2], m[3]
	if got, want, ok := strings.Cut(strings.TrimPrefix(p.Msg, "incompatible types: TOML value has type "), "; destination has type "); ok {
		p.Msg = wrongType(typeWord(want), lineValue(text, p.Line), got)
	}
	return p, true
}

// blankLine replaces line n (1-based) with spaces, keeping the offsets of
// the others; it reports false when there is nothing left to blank.
func blankLine(text []byte, n int) bool {
	line := 1
	for i := range text {
		if line == n && text[i] != '\n' {
			text[i] = ' '
			continue
		}
		if text[i] == '\n' {
			line++
			if line > n {
				return true
			}
		}
	}
	return line >= n
}

// durationKeys lists the dotted keys whose values are time.Duration.
func durationKeys() map[string]bool {
	keys := map[string]bool{}
	walk("", reflect.ValueOf(Default()), func(string, string) {}, func(table, key, _ string, v reflect.Value) {
		if v.Type() == reflect.TypeFor[time.Duration]() {
			keys[join(table, key)] = true
		}
	})
	return keys
}

// Validate checks every value and returns all problems, each naming its key.
// Zero never silently means "unlimited": limits must be positive.
func (c Config) Validate() []Problem {
	var ps []Problem
	bad := func(key, format string, a ...any) {
		ps = append(ps, Problem{Key: key, Msg: fmt.Sprintf(format, a...)})
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	ps = append(ps, c.Cluster.validate()...)
	ps = append(ps, c.Postgres.validate()...)
	if c.Hostname == "" || strings.ContainsAny(c.Hostname, " \t\r\n") {
		bad("hostname", "must be a host name")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil {
		bad("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "must be text or json, not %q", c.Log.Format)
	}
	if c.Log.MaxSize < 1<<20 {
		bad("log.max_size", "must be at least 1MiB")
	}
	if c.Log.MaxAge <= 0 {
		bad("log.max_age", "must be > 0 (e.g. \"168h\")")
	}
	if c.Log.MaxBackups <= 0 {
		bad("log.max_backups", "must be > 0")
	}
	ps = append(ps, c.validateTLS()...)
	if c.Store.Sync != "syncfs" && c.Store.Sync != "fsync" {
		bad("store.sync", "must be syncfs or fsync, not %q", c.Store.Sync)
	}
	if c.Accounts.DefaultQuota <= 0 {
		bad("accounts.default_quota", "must be > 0")
	}
	ps = append(ps, c.Accounts.problems()...)
	if c.MemoryLimit < 0 {
		bad("memory_limit", "must be >= 0 (0: no limit of agua's own)")
	}
	s := c.SMTP
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"smtp.listen", s.Listen}, {"smtp.submission_listen", s.SubmissionListen}, {"smtp.submissions_listen", s.SubmissionsListen}} {
		for _, a := range l.addrs {
			if msg := hostPortProblem(a); msg != "" {
				bad(l.key, "%s", msg)
			}
		}
	}
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"pop3.listen", c.POP3.Listen}, {"pop3.tls_listen", c.POP3.TLSListen}} {
		for _, a := range l.addrs {
			if msg := hostPortProblem(a); msg != "" {
				bad(l.key, "%s", msg)
			}
		}
	}
	p3 := c.POP3
	for _, p := range []struct {
		key string
		v   int64
	}{
		{"pop3.preauth_timeout", int64(p3.PreAuthTimeout)},
		{"pop3.idle_timeout", int64(p3.IdleTimeout)},
		{"pop3.session_timeout", int64(p3.SessionTimeout)},
		{"pop3.max_errors", int64(p3.MaxErrors)},
		{"pop3.max_connections", int64(p3.MaxConns)},
	} {
		if p.v <= 0 {
			bad(p.key, "must be > 0")
		}
	}
	if p3.MaxLineLength < 255 {
		bad("pop3.max_line_length", "must be at least 255 (RFC 2449 4)")
	}
	if p3.AuthDelay < 0 {
		bad("pop3.auth_failure_delay", "must not be negative")
	}
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"imap.listen", c.IMAP.Listen}, {"imap.tls_listen", c.IMAP.TLSListen}} {
		for _, a := range l.addrs {
			if msg := hostPortProblem(a); msg != "" {
				bad(l.key, "%s", msg)
			}
		}
	}
	im := c.IMAP
	for _, p := range []struct {
		key string
		v   int64
	}{
		{"imap.preauth_timeout", int64(im.PreAuthTimeout)},
		{"imap.idle_timeout", int64(im.IdleTimeout)},
		{"imap.session_timeout", int64(im.SessionTimeout)},
		{"imap.max_errors", int64(im.MaxErrors)},
		{"imap.max_message_size", int64(im.MaxMessageSize)},
		{"imap.max_connections", int64(im.MaxConns)},
	} {
		if p.v <= 0 {
			bad(p.key, "must be > 0")
		}
	}
	if im.MaxMessageSize > 1<<32-1 {
		bad("imap.max_message_size", "must be below 4GiB (APPENDLIMIT is a 32-bit number)")
	}
	if im.AuthDelay < 0 {
		bad("imap.auth_failure_delay", "must not be negative")
	}
	if a := c.Admin.Listen; a != "" {
		host, port, err := net.SplitHostPort(a)
		ip := net.ParseIP(host)
		switch {
		case err != nil || port == "" || !validHostPort(a):
			bad("admin.listen", "%s", hostPortProblem(a))
		case (ip == nil || !ip.IsLoopback()) && host != "localhost" && (c.Admin.Token == "" || !c.Admin.TLS):
			// The admin API can lift bans and switch lockdown: never expose
			// it off loopback without both.
			bad("admin.listen", "%q is not a loopback address: set admin.token and admin.tls = true to listen there", a)
		}
	}
	if c.Admin.WidestBlock4 < 1 || c.Admin.WidestBlock4 > 32 {
		bad("admin.widest_block4", "must be between 1 and 32 (bits of an IPv4 prefix)")
	}
	if c.Admin.WidestBlock6 < 1 || c.Admin.WidestBlock6 > 128 {
		bad("admin.widest_block6", "must be between 1 and 128 (bits of an IPv6 prefix)")
	}
	ps = append(ps, c.listenerProblems()...)
	if len(s.Listen)+len(s.SubmissionListen)+len(s.SubmissionsListen) == 0 {
		bad("smtp", "no listener configured")
	}
	positive := []struct {
		key string
		v   int64
	}{
		{"smtp.max_message_size", int64(s.MaxMessageSize)},
		{"smtp.max_recipients", int64(s.MaxRecipients)},
		{"smtp.max_errors", int64(s.MaxErrors)},
		{"smtp.command_timeout", int64(s.CommandTimeout)},
		{"smtp.data_timeout", int64(s.DataTimeout)},
		{"smtp.session_timeout", int64(s.SessionTimeout)},
		{"smtp.max_connections", int64(s.MaxConns)},
		{"smtp.delivery_slots", int64(s.DeliverySlots)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.key, "must be > 0")
		}
	}
	if s.MaxCommandLength < 512 {
		bad("smtp.max_command_length", "must be at least 512 (RFC 5321 4.5.3.1.4)")
	}
	if s.MaxLineLength < 1000 {
		bad("smtp.max_line_length", "must be at least 1000 (RFC 5321 4.5.3.1.6)")
	}
	if s.BannerDelay < 0 || s.BannerDelay > s.CommandTimeout {
		bad("smtp.banner_delay", "must be between 0 and command_timeout")
	}
	if s.AuthDelay < 0 {
		bad("smtp.auth_failure_delay", "must not be negative")
	}
	ps = append(ps, c.validateOutbound()...)
	ps = append(ps, c.Autoconfig.validate()...)
	ps = append(ps, c.Auth.validate()...)
	ps = append(ps, c.DNSBL.validate()...)
	ps = append(ps, c.Greylist.validate()...)
	for _, err := range c.Shield.Validate() {
		ps = append(ps, shieldProblem(err))
	}
	return ps
}

// Listener is one configured listen address and the key that sets it.
type Listener struct{ Key, Addr string }

// Listeners returns every address agua serve binds, with its key.
func (c Config) Listeners() []Listener {
	var ls []Listener
	for _, g := range []struct {
		key   string
		addrs []string
	}{
		{"smtp.listen", c.SMTP.Listen}, {"smtp.submission_listen", c.SMTP.SubmissionListen},
		{"smtp.submissions_listen", c.SMTP.SubmissionsListen},
		{"pop3.listen", c.POP3.Listen}, {"pop3.tls_listen", c.POP3.TLSListen},
		{"imap.listen", c.IMAP.Listen}, {"imap.tls_listen", c.IMAP.TLSListen},
		{"admin.listen", []string{c.Admin.Listen}},
		{"autoconfig.listen", []string{c.Autoconfig.Listen}},
	} {
		for _, a := range g.addrs {
			if a != "" {
				ls = append(ls, Listener{g.key, a})
			}
		}
	}
	// ACME's challenge listener, unless the autoconfig listener answers.
	if c.TLS.ACME && c.TLS.ACMEChallengeAddr() != c.Autoconfig.Listen {
		ls = append(ls, Listener{"tls.acme_challenge_listen", c.TLS.ACMEChallengeAddr()})
	}
	return ls
}

// listenerProblems finds what would make serve fail or expose the demo
// account: two listeners on one port (the second bind fails), and the
// demo account on a server that listens off loopback.
func (c Config) listenerProblems() []Problem {
	var ps []Problem
	ls := c.Listeners()
	offLoopback := ""
	for i, l := range ls {
		host, port, err := net.SplitHostPort(l.Addr)
		if err != nil || !validHostPort(l.Addr) {
			continue // reported as not host:port
		}
		if offLoopback == "" && !loopbackHost(host) {
			offLoopback = l.Key + " = " + strconv.Quote(l.Addr)
		}
		if port == "0" {
			continue // any free port: never a clash
		}
		for _, o := range ls[:i] {
			oh, op, err := net.SplitHostPort(o.Addr)
			if err == nil && op == port && hostsOverlap(host, oh) {
				ps = append(ps, Problem{Key: l.Key, Msg: fmt.Sprintf("%q clashes with %s = %q: both cannot bind the same port", l.Addr, o.Key, o.Addr)})
				break
			}
		}
	}
	if c.Accounts.Demo && offLoopback != "" {
		ps = append(ps, Problem{Key: "accounts.demo", Msg: fmt.Sprintf("the demo account (demo@example.test, its password printed at start) is only for a server on loopback, and %s is not: remove demo = true", offLoopback)})
	}
	return ps
}

// loopbackHost reports whether a listen host only reaches this machine.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// hostsOverlap reports whether two listen hosts on one port would clash:
// the same address, or either one every address (Linux refuses both binds
// of 0.0.0.0:25 and 127.0.0.1:25; Go's "tcp" [::] also takes IPv4).
func hostsOverlap(a, b string) bool {
	norm := func(h string) string {
		if h == "localhost" {
			return "127.0.0.1"
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			if ip.IsUnspecified() {
				return ""
			}
			return ip.Unmap().String()
		}
		return h
	}
	a, b = norm(a), norm(b)
	return a == "" || b == "" || a == b
}

// validHostPort accepts host:port with a port from 0 (any free port) to
// 65535.
func validHostPort(a string) bool { return hostPortProblem(a) == "" }

// hostPortProblem says what is wrong with a host:port, or "" when nothing:
// `"127.0.0.1:99999": port 99999 is out of range 1-65535`.
func hostPortProblem(a string) string {
	_, port, err := net.SplitHostPort(a)
	if err != nil || port == "" {
		return strconv.Quote(a) + " is not host:port"
	}
	n, err := strconv.Atoi(port)
	switch {
	case err != nil && strings.Trim(port, "0123456789") != "":
		return strconv.Quote(a) + ": port " + strconv.Quote(port) + " is not a number"
	case err != nil || n < 0 || n > 65535:
		return strconv.Quote(a) + ": port " + port + " is out of range 1-65535"
	}
	return ""
}

// shieldProblem turns a shield validation error ("limits.per_ip_conns: must
// be > 0") into a Problem keyed under [shield].
func shieldProblem(err error) Problem {
	msg := err.Error()
	if k, rest, ok := strings.Cut(msg, ": "); ok && !strings.ContainsAny(k, " \t") {
		return Problem{Key: "shield." + k, Msg: rest}
	}
	return Problem{Key: "shield", Msg: msg}
}

// Resolve makes a path relative to the data folder absolute-ish: absolute
// paths stay, relative ones are joined to DataDir.
func (c Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.DataDir, p)
}

// lineIndex maps dotted keys to the line where they are set.
type lineIndex map[string]int

// keyLines scans TOML text for table headers and key assignments. It is a
// locator for error messages, not a parser: the real parsing is done by
// BurntSushi/toml, which does not expose key positions.
func keyLines(data []byte) lineIndex {
	idx := lineIndex{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	table := ""
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#':
		case strings.HasPrefix(line, "["):
			t := strings.Trim(line, "[] ")
			if i := strings.Index(t, "]"); i >= 0 {
				t = t[:i]
			}
			table = strings.TrimSpace(t)
			if _, ok := idx[table]; !ok {
				idx[table] = n
			}
		default:
			k, _, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			k = strings.Trim(strings.TrimSpace(k), `"'`)
			full := k
			if table != "" {
				full = table + "." + k
			}
			if _, ok := idx[full]; !ok {
				idx[full] = n
			}
		}
	}
	return idx
}

// find returns the line of key or of its closest enclosing table.
func (idx lineIndex) find(key string) int {
	for k := key; k != ""; {
		if n, ok := idx[k]; ok {
			return n
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}
