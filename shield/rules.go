package shield

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/gaissmai/bart"
)

// rule is one compiled allow or deny line.
type rule struct {
	prefix netip.Prefix
	allow  bool
	action Action // deny action; Allow for allow rules
	dryRun bool
	source string // "shield.rules:12", "config:rules[3]", "config:allow[0]"
	text   string // the line as written, without comment
}

// policy is an immutable compiled snapshot of all rules. It is swapped as a
// whole through an atomic.Pointer; readers never lock.
type policy struct {
	table   *bart.Table[uint32] // prefix -> index into rules
	rules   []rule
	allow   *bart.Lite // allow rules and Config.Allow, for Ban checks
	trusted *bart.Lite // Config.TrustedProxies
}

// lookup returns the longest-prefix rule for addr, or nil.
func (p *policy) lookup(addr netip.Addr) *rule {
	i, ok := p.table.Lookup(addr)
	if !ok {
		return nil
	}
	return &p.rules[i]
}

// ruleError is one bad rule line.
type ruleError struct {
	Source string // file:line or config:rules[N]
	Reason string
}

func (e ruleError) Error() string { return e.Source + ": " + e.Reason }

// maxRuleErrors bounds how many bad lines one error lists.
const maxRuleErrors = 100

// RulesError lists every bad rule line of a load or reload.
type RulesError struct {
	Lines []error // each "file:line: reason"
	More  int     // bad lines beyond those listed
}

func (e *RulesError) Error() string {
	var b strings.Builder
	for i, l := range e.Lines {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(l.Error())
	}
	if e.More > 0 {
		fmt.Fprintf(&b, "; and %d more bad lines", e.More)
	}
	return b.String()
}

// parsedLine is a rule line before compilation.
type parsedLine struct {
	prefix        netip.Prefix
	allow         bool
	actionSet     bool
	action        Action
	dryRun        bool
	text          string
	empty         bool
	defaultAction bool
}

// parseRuleLine parses one rule line:
//
//	[allow|deny] ADDRESS[/BITS] [reject|drop|tarpit] [dry-run] [# comment]
//
// A bare address is a deny with the default action. An empty or comment-only
// line returns empty=true.
func parseRuleLine(line string) (parsedLine, error) {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSpace(line)
	pl := parsedLine{text: line}
	if line == "" {
		pl.empty = true
		return pl, nil
	}
	var fields [5]string
	n := 0
	for rest := line; rest != ""; {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			break
		}
		end := strings.IndexAny(rest, " \t")
		if end < 0 {
			end = len(rest)
		}
		if n == len(fields) {
			return pl, errors.New("too many words")
		}
		fields[n] = rest[:end]
		n++
		rest = rest[end:]
	}
	f := fields[:n]
	verb := "deny"
	switch strings.ToLower(f[0]) {
	case "allow", "deny":
		verb = strings.ToLower(f[0])
		f = f[1:]
	}
	if len(f) == 0 {
		return pl, fmt.Errorf("%s needs an address or CIDR", verb)
	}
	p, err := parsePrefix(f[0])
	if err != nil {
		return pl, err
	}
	pl.prefix = p
	pl.allow = verb == "allow"
	for _, w := range f[1:] {
		switch lw := strings.ToLower(w); lw {
		case "dry-run", "dryrun", "dry_run":
			if pl.dryRun {
				return pl, errors.New("dry-run given twice")
			}
			pl.dryRun = true
		case "reject", "drop", "tarpit":
			if pl.allow {
				return pl, fmt.Errorf("allow takes no action, got %q", w)
			}
			if pl.actionSet {
				return pl, fmt.Errorf("second action %q", w)
			}
			pl.action, _ = ParseAction(lw)
			pl.actionSet = true
		default:
			return pl, fmt.Errorf("unknown word %q (want reject, drop, tarpit or dry-run)", w)
		}
	}
	if pl.allow && pl.dryRun {
		return pl, errors.New("allow cannot be dry-run")
	}
	return pl, nil
}

// policyBuilder accumulates rules and errors.
type policyBuilder struct {
	cfg   *Config
	table *bart.Table[uint32]
	rules []rule
	allow *bart.Lite
	errs  []error
	more  int
}

func newPolicyBuilder(cfg *Config, sizeHint int) *policyBuilder {
	return &policyBuilder{cfg: cfg, table: new(bart.Table[uint32]), rules: make([]rule, 0, sizeHint), allow: new(bart.Lite)}
}

func (b *policyBuilder) fail(source, reason string) {
	if len(b.errs) >= maxRuleErrors {
		b.more++
		return
	}
	b.errs = append(b.errs, ruleError{Source: source, Reason: reason})
}

// add compiles one line; a later rule for the same prefix replaces an earlier one.
func (b *policyBuilder) add(line string, source func() string) {
	pl, err := parseRuleLine(line)
	if err != nil {
		b.fail(source(), err.Error())
		return
	}
	if pl.empty {
		return
	}
	r := rule{prefix: pl.prefix, allow: pl.allow, dryRun: pl.dryRun, text: pl.text, source: source()}
	if !pl.allow {
		r.action = b.cfg.DefaultAction
		if pl.actionSet {
			r.action = pl.action
		}
		if r.action == Allow {
			r.action = Reject
		}
	} else {
		b.allow.Insert(pl.prefix)
	}
	b.insert(r)
}

func (b *policyBuilder) insert(r rule) {
	b.table.Modify(r.prefix, func(old uint32, exists bool) (uint32, bool) {
		if exists {
			b.rules[old] = r
			return old, false
		}
		b.rules = append(b.rules, r)
		return uint32(len(b.rules) - 1), false
	})
}

// addFile compiles a rules file. A missing file is empty.
func (b *policyBuilder) addFile(name string) error {
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	text := string(data)
	lineNo := 0
	for len(text) > 0 {
		lineNo++
		var line string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		n := lineNo
		b.add(line, func() string { return name + ":" + strconv.Itoa(n) })
	}
	return nil
}

// compilePolicy builds a policy from the config's inline rules, allow list,
// trusted proxies and rule files. On bad lines it returns a *RulesError
// listing them all and no policy.
func compilePolicy(cfg *Config) (*policy, error) {
	b := newPolicyBuilder(cfg, len(cfg.Rules)+len(cfg.Allow))
	for i, line := range cfg.Rules {
		b.add(line, func() string { return "config:rules[" + strconv.Itoa(i) + "]" })
	}
	for _, name := range cfg.RuleFiles {
		if err := b.addFile(name); err != nil {
			return nil, err
		}
	}
	// Config.Allow is applied last so that it wins over any rule for the
	// same prefix.
	for i, a := range cfg.Allow {
		src := "config:allow[" + strconv.Itoa(i) + "]"
		p, err := parsePrefix(a)
		if err != nil {
			b.fail(src, err.Error())
			continue
		}
		b.allow.Insert(p)
		b.insert(rule{prefix: p, allow: true, source: src, text: "allow " + a})
	}
	trusted := new(bart.Lite)
	for i, a := range cfg.TrustedProxies {
		p, err := parsePrefix(a)
		if err != nil {
			b.fail("config:trusted_proxies["+strconv.Itoa(i)+"]", err.Error())
			continue
		}
		trusted.Insert(p)
	}
	if len(b.errs) > 0 {
		return nil, &RulesError{Lines: b.errs, More: b.more}
	}
	return &policy{table: b.table, rules: b.rules, allow: b.allow, trusted: trusted}, nil
}
