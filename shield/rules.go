package shield

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

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
//
// Single-address rules, the bulk of any blocklist, live in a map; wider
// prefixes in a bart table. A host rule is the longest possible prefix, so
// checking the map first and the table second is a longest-prefix match,
// and loading a million lines stays well under a second.
type policy struct {
	hosts4  []uint64            // /32 rules, sorted: address<<32 | index into rules
	hosts6  map[[16]byte]uint32 // /128 rules -> index into rules
	table   *bart.Table[uint32] // wider prefixes -> index into rules
	rules   []rule
	trusted *bart.Lite // Config.TrustedProxies
	files   []RuleFile // what each rule file gave, in Config order
}

// RuleFile is what one rule file gave the policy in force.
type RuleFile struct {
	Name    string `json:"name"`
	Missing bool   `json:"missing,omitempty"` // the file did not exist: none of its rules are in force
	Lines   int    `json:"lines"`
	Rules   int    `json:"rules"`
}

// lookup returns the longest-prefix rule for addr, or nil.
func (p *policy) lookup(addr netip.Addr) *rule {
	var i uint32
	var ok bool
	if addr.Is4() {
		i, ok = searchHosts4(p.hosts4, addr4(addr))
	} else {
		i, ok = p.hosts6[addr.As16()]
	}
	if ok {
		return &p.rules[i]
	}
	if i, ok := p.table.Lookup(addr); ok {
		return &p.rules[i]
	}
	return nil
}

// lookupPrefix returns the most specific rule covering all of pfx, or nil.
func (p *policy) lookupPrefix(pfx netip.Prefix) *rule {
	if pfx.IsSingleIP() {
		return p.lookup(pfx.Addr())
	}
	if i, ok := p.table.LookupPrefix(pfx); ok {
		return &p.rules[i]
	}
	return nil
}

// size returns the number of distinct prefixes with a rule.
func (p *policy) size() int { return len(p.hosts4) + len(p.hosts6) + p.table.Size() }

// searchHosts4 binary-searches the sorted address<<32|index keys.
func searchHosts4(keys []uint64, a uint32) (uint32, bool) {
	lo, hi := 0, len(keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if uint32(keys[m]>>32) < a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(keys) && uint32(keys[lo]>>32) == a {
		return uint32(keys[lo]), true
	}
	return 0, false
}

// sortHosts4 sorts the keys and keeps, for each address, the last rule.
func sortHosts4(keys []uint64) []uint64 {
	slices.Sort(keys)
	out := keys[:0]
	for i, k := range keys {
		if i+1 < len(keys) && keys[i+1]>>32 == k>>32 {
			continue // a later line for the same address wins
		}
		out = append(out, k)
	}
	return slices.Clip(out)
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
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
	for i := 0; i < len(line); {
		if c := line[i]; c == ' ' || c == '\t' || c == '\r' {
			i++
			continue
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '\r' {
			j++
		}
		if n == len(fields) {
			return pl, errors.New("too many words")
		}
		fields[n] = line[i:j]
		n++
		i = j
	}
	f := fields[:n]
	verb := "deny"
	switch {
	case f[0] == "deny" || strings.EqualFold(f[0], "deny"):
		f = f[1:]
	case f[0] == "allow" || strings.EqualFold(f[0], "allow"):
		verb = "allow"
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
			switch lw {
			case "reject":
				pl.action = Reject
			case "drop":
				pl.action = Drop
			default:
				pl.action = Tarpit
			}
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
//
// Rules are stored in b.rules in the order they are given (inline rules,
// then each file, then Config.Allow); a rule's index is its position, so a
// higher index is a later rule and wins for the same prefix. The lookup
// structures are filled at the end, in finish.
type policyBuilder struct {
	cfg    *Config
	rules  []rule
	hosts4 []uint64 // address<<32 | index, unsorted
	hosts6 []uint32 // indexes of /128 rules, in order
	nets   []uint32 // indexes of wider rules, in order
	errs   []error
	more   int
	files  []RuleFile
}

func (b *policyBuilder) fail(source, reason string) {
	if len(b.errs) >= maxRuleErrors {
		b.more++
		return
	}
	b.errs = append(b.errs, ruleError{Source: source, Reason: reason})
}

// add compiles one inline line.
func (b *policyBuilder) add(line string, source string) {
	r, ok, err := b.parse(line)
	if err != nil {
		b.fail(source, err.Error())
		return
	}
	if ok {
		r.source = source
		b.push(r)
	}
}

// push appends r and indexes it.
func (b *policyBuilder) push(r rule) {
	b.rules = append(b.rules, r)
	i := uint32(len(b.rules) - 1)
	switch a := r.prefix.Addr(); {
	case !r.prefix.IsSingleIP():
		b.nets = append(b.nets, i)
	case a.Is4():
		b.hosts4 = append(b.hosts4, uint64(addr4(a))<<32|uint64(i))
	default:
		b.hosts6 = append(b.hosts6, i)
	}
}

// parse turns a line into a rule without its source; ok is false for an
// empty or comment line.
func (b *policyBuilder) parse(line string) (r rule, ok bool, err error) {
	pl, err := parseRuleLine(line)
	if err != nil || pl.empty {
		return r, false, err
	}
	r = rule{prefix: pl.prefix, allow: pl.allow, dryRun: pl.dryRun, text: pl.text}
	if !pl.allow {
		r.action = b.cfg.DefaultAction
		if pl.actionSet {
			r.action = pl.action
		}
		if r.action == Allow {
			r.action = Reject
		}
	}
	return r, true, nil
}

// parallelLines is the file size from which rules files are parsed in
// parallel.
const parallelLines = 50_000

// addFile compiles a rules file. A missing file is empty.
//
// The rule of line L is stored at b.rules[base+L-1] (comment and bad lines
// leave an unused zero slot), so large files are parsed in parallel chunks
// that write straight into their own part of b.rules, and file order is
// kept without copying.
func (b *policyBuilder) addFile(name string) error {
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		b.files = append(b.files, RuleFile{Name: name, Missing: true})
		return nil
	}
	if err != nil {
		return err
	}
	// data is never written again, so the rules' text can share it.
	text := unsafe.String(unsafe.SliceData(data), len(data))
	lines := strings.Count(text, "\n") + 1
	base := len(b.rules)
	b.rules = slices.Grow(b.rules, lines)[:base+lines]
	n := 1
	if lines >= parallelLines {
		n = min(runtime.GOMAXPROCS(0), 4)
	}
	chunks := make([]parsedChunk, n)
	var wg sync.WaitGroup
	pos, lineNo := 0, 1
	for i := range chunks {
		end := len(text)
		if i < n-1 {
			end = len(text) * (i + 1) / n
			if j := strings.IndexByte(text[end:], '\n'); j >= 0 {
				end += j + 1
			} else {
				end = len(text)
			}
			end = max(end, pos)
		}
		part, first := text[pos:end], lineNo
		lineNo += strings.Count(part, "\n")
		pos = end
		wg.Add(1)
		go func() {
			defer wg.Done()
			chunks[i] = b.parseChunk(name, part, first, base)
		}()
	}
	wg.Wait()
	f := RuleFile{Name: name, Lines: lineNo - 1}
	if len(text) > 0 && text[len(text)-1] != '\n' {
		f.Lines++
	}
	for _, c := range chunks {
		f.Rules += len(c.hosts4) + len(c.hosts6) + len(c.nets)
		for _, e := range c.errs {
			b.fail(e.Source, e.Reason)
		}
		b.more += c.more
		b.hosts4 = append(b.hosts4, c.hosts4...)
		b.hosts6 = append(b.hosts6, c.hosts6...)
		b.nets = append(b.nets, c.nets...)
	}
	b.files = append(b.files, f)
	return nil
}

// parsedChunk is what parsing one part of a rules file found besides the
// rules themselves.
type parsedChunk struct {
	hosts4 []uint64
	hosts6 []uint32
	nets   []uint32
	errs   []ruleError
	more   int
}

// parseChunk parses text, whose first line is number firstLine of file name,
// storing line L's rule at b.rules[base+L-1]. Chunks write disjoint parts
// of b.rules and read nothing else of b but the config.
func (b *policyBuilder) parseChunk(name, text string, firstLine, base int) parsedChunk {
	var c parsedChunk
	// Every rule's "file:line" source is a substring of one arena string,
	// so a million rules cost no per-rule allocation for it.
	lines := strings.Count(text, "\n") + 1
	arena := make([]byte, 0, lines*(len(name)+8))
	type src struct{ idx, end uint32 }
	srcs := make([]src, 0, lines)
	for lineNo := firstLine; len(text) > 0; lineNo++ {
		var line string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		r, ok, err := b.parse(line)
		if err != nil {
			if len(c.errs) < maxRuleErrors {
				c.errs = append(c.errs, ruleError{Source: name + ":" + strconv.Itoa(lineNo), Reason: err.Error()})
			} else {
				c.more++
			}
			continue
		}
		if !ok {
			continue
		}
		idx := uint32(base + lineNo - 1)
		b.rules[idx] = r
		arena = append(arena, name...)
		arena = append(arena, ':')
		arena = strconv.AppendInt(arena, int64(lineNo), 10)
		srcs = append(srcs, src{idx, uint32(len(arena))})
		switch a := r.prefix.Addr(); {
		case !r.prefix.IsSingleIP():
			c.nets = append(c.nets, idx)
		case a.Is4():
			c.hosts4 = append(c.hosts4, uint64(addr4(a))<<32|uint64(idx))
		default:
			c.hosts6 = append(c.hosts6, idx)
		}
	}
	all := unsafe.String(unsafe.SliceData(arena), len(arena)) // arena is not written again
	start := uint32(0)
	for _, s := range srcs {
		b.rules[s.idx].source = all[start:s.end]
		start = s.end
	}
	return c
}

// finish builds the lookup structures. The host keys are sorted while the
// prefix table is built.
func (b *policyBuilder) finish(trusted *bart.Lite) *policy {
	p := &policy{rules: b.rules, trusted: trusted, table: new(bart.Table[uint32]), files: b.files,
		hosts6: make(map[[16]byte]uint32, len(b.hosts6))}
	done := make(chan struct{})
	go func() {
		p.hosts4 = sortHosts4(b.hosts4)
		close(done)
	}()
	for _, i := range b.nets {
		p.table.Insert(b.rules[i].prefix, i) // in order: a later rule replaces
	}
	for _, i := range b.hosts6 {
		p.hosts6[b.rules[i].prefix.Addr().As16()] = i
	}
	<-done
	return p
}

// compilePolicy builds a policy from the config's inline rules, allow list,
// trusted proxies and rule files. On bad lines it returns a *RulesError
// listing them all and no policy.
func compilePolicy(cfg *Config) (*policy, error) {
	b := &policyBuilder{cfg: cfg}
	for i, line := range cfg.Rules {
		b.add(line, "config:rules["+strconv.Itoa(i)+"]")
	}
	for _, name := range cfg.RuleFiles {
		if err := b.addFile(name); err != nil {
			return nil, err
		}
	}
	// Config.Allow comes last so that it wins over any rule for the same
	// prefix.
	for i, a := range cfg.Allow {
		src := "config:allow[" + strconv.Itoa(i) + "]"
		p, err := parsePrefix(a)
		if err != nil {
			b.fail(src, err.Error())
			continue
		}
		b.push(rule{prefix: p, allow: true, source: src, text: "allow " + a})
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
	return b.finish(trusted), nil
}

// CheckRules reads and compiles the inline rules and rule files of c
// without starting anything, for `config check`-style validation. The
// error is a *RulesError listing every bad line as file:line: reason.
func (c Config) CheckRules() error {
	_, err := compilePolicy(&c)
	return err
}
