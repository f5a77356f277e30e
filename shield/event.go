package shield

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Event is a behaviour a service reports about its client with [Report] or
// [Conn.Report]. Events are open: a service defines its own with [Register]
// (a mail server registers unknown recipients and accepted messages, a web
// service failed form posts). The shield defines only what any service has:
// [AuthFailure], [AuthSuccess] and [ProtocolError].
//
// An Event is a small number handed out by Register, valid in this process
// only; its name (Event.String) is what logs, ban reasons, the history and
// the thresholds config use.
type Event uint8

// Behaviour defines an event: its name, its default thresholds and what a
// ban for it looks like. Config.Thresholds overrides the thresholds by name
// (thresholds.<name> and, for the network count, thresholds.network_<name>).
type Behaviour struct {
	// Name is the stable name: lower-case letters, digits and '_', not
	// starting with "network_" (reserved for network thresholds).
	Name string
	// Doc says what the event is, for documentation.
	Doc string
	// Threshold is the default per-address threshold: Count events within
	// Window ban the address. A zero Count: the event is not counted per
	// address (a signal, such as a successful login).
	Threshold Threshold
	// Network is the default per-network threshold (Config.IPv4Prefix,
	// Config.IPv6Prefix), for a flood spread over many addresses that each
	// stay under Threshold; crossing it bans the network. A zero Count: not
	// counted per network.
	Network Threshold
	// Reason is the client-safe text of a ban ("banned for repeated
	// protocol errors"); "" is "access denied". NetworkReason is the text
	// of a network ban; "" is Reason.
	Reason, NetworkReason string
	// Temporary makes the ban a rate refusal (421, -ERR [SYS/TEMP], 429):
	// a flood of otherwise good traffic. Temporary bans never grow into a
	// prefix ban (Config.PrefixBanThreshold).
	Temporary bool
	// BanTTL is the duration of a first ban; 0 is Config.BanTTL. Repeat
	// bans grow by Config.BanFactor up to Config.BanMaxTTL (or BanTTL if
	// longer), unless NoEscalation.
	BanTTL       time.Duration
	NoEscalation bool
	// KnownGood marks the reporting address known-good (unless it is
	// banned): a login, an accepted message.
	KnownGood bool
	// Resets clears the reporting address's count of another event (a
	// successful login clears its failed logins).
	Resets Event
	// Benign events are not offences in reports (AddrHistory.Offending).
	Benign bool
	// Reputation is the default weight of one event in the reporting
	// address's reputation score (and its network's): negative for bad
	// behaviour, positive for good, 0 for none. Configured under
	// reputation.weights.<name>.
	Reputation float64
	// Guessing marks password guessing: the network count runs over
	// Config.Guessing prefixes (/24, /48) rather than IPv4Prefix/IPv6Prefix,
	// and a network ban for it spares the network's known-good addresses
	// (a real user sharing a provider with a botnet keeps logging in).
	Guessing bool

	passive bool // a name read from a history file, not registered by this process
}

// The events any service has.
var (
	// AuthFailure is a failed login (brute force).
	AuthFailure = MustRegister(Behaviour{Name: "auth_failure", Doc: "failed logins (brute force)",
		Threshold:     Threshold{Count: 10, Window: 10 * time.Minute},
		Network:       Threshold{Count: 30, Window: 10 * time.Minute},
		Reason:        "banned for repeated authentication failures",
		NetworkReason: "banned for repeated authentication failures from your network",
		Guessing:      true, Reputation: -1})
	// AuthSuccess resets the address's failed logins and marks it
	// known-good; it is no free pass for other thresholds.
	AuthSuccess = MustRegister(Behaviour{Name: "auth_success", Doc: "successful logins",
		KnownGood: true, Resets: AuthFailure, Benign: true, Reputation: 1})
	// ProtocolError is a syntax error, an unknown command, HTTP on a
	// non-HTTP port, a line too long.
	ProtocolError = MustRegister(Behaviour{Name: "protocol_error", Doc: "syntax errors, unknown commands, HTTP on a mail port, lines too long",
		Threshold: Threshold{Count: 10, Window: 5 * time.Minute},
		Reason:    "banned for repeated protocol errors", Reputation: -1})
)

// networkPrefix starts the config name of a behaviour's network threshold.
const networkPrefix = "network_"

// maxEvents bounds the registry (Event is a uint8; 0 is no event).
const maxEvents = 255

// registry holds every registered behaviour, indexed by Event. Readers load
// the slice without a lock; Register copies it.
var registry struct {
	mu      sync.Mutex
	byName  map[string]Event
	list    atomic.Pointer[[]Behaviour] // [0] unused
	passive int                         // names registered from files
}

// maxPassive bounds the event names a history file can add, so a damaged
// file cannot fill the registry before a service registers its own.
const maxPassive = 64

// Register adds a behaviour and returns its Event. Register at package
// initialisation (var MyEvent = shield.MustRegister(...)), before any
// Config or Shield is built: DefaultConfig holds the thresholds of the
// behaviours registered when it is called, and Validate rejects thresholds
// of unknown names.
func Register(b Behaviour) (Event, error) {
	if err := b.check(); err != nil {
		return 0, fmt.Errorf("shield: behaviour %q: %w", b.Name, err)
	}
	b.passive = false
	return register(b)
}

// MustRegister is Register that panics on error, for package variables.
func MustRegister(b Behaviour) Event {
	ev, err := Register(b)
	if err != nil {
		panic(err)
	}
	return ev
}

func register(b Behaviour) (Event, error) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.byName == nil {
		registry.byName = make(map[string]Event)
		registry.list.Store(&[]Behaviour{{}})
	}
	old := *registry.list.Load()
	if ev, ok := registry.byName[b.Name]; ok {
		if !old[ev].passive || b.passive {
			if b.passive {
				return ev, nil
			}
			return 0, fmt.Errorf("shield: behaviour %q registered twice", b.Name)
		}
		list := append([]Behaviour(nil), old...)
		list[ev] = b // a real definition replaces a name read from a file
		registry.list.Store(&list)
		registry.passive--
		return ev, nil
	}
	if len(old) > maxEvents {
		return 0, fmt.Errorf("shield: more than %d behaviours", maxEvents)
	}
	if b.passive {
		if registry.passive >= maxPassive {
			return 0, errors.New("shield: too many event names from files")
		}
		registry.passive++
	}
	ev := Event(len(old))
	list := append(append([]Behaviour(nil), old...), b)
	registry.byName[b.Name] = ev
	registry.list.Store(&list)
	return ev, nil
}

func (b *Behaviour) check() error {
	if !validEventName(b.Name) {
		return errors.New("name must be 1 to 64 of a-z, 0-9 and _")
	}
	if strings.HasPrefix(b.Name, networkPrefix) {
		return fmt.Errorf("name must not start with %q", networkPrefix)
	}
	for _, t := range []Threshold{b.Threshold, b.Network} {
		if t.Count < 0 || (t.Count > 0 && t.Window <= 0) {
			return errors.New("a threshold needs Count >= 0 and, with a Count, Window > 0")
		}
	}
	if b.Reputation != b.Reputation || b.Reputation > maxWeight || b.Reputation < -maxWeight {
		return errors.New("Reputation must be a number between -1e6 and 1e6")
	}
	if b.BanTTL < 0 {
		return errors.New("BanTTL must not be negative")
	}
	if b.Resets != 0 && !b.Resets.valid() {
		return errors.New("Resets names no registered event")
	}
	return nil
}

func validEventName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// behaviours returns the registry, indexed by Event.
func behaviours() []Behaviour {
	if p := registry.list.Load(); p != nil {
		return *p
	}
	return nil
}

// numEvents is the number of Event values in use (including the unused 0).
func numEvents() int { return len(behaviours()) }

// Behaviours returns every registered behaviour in registration order.
func Behaviours() []Behaviour {
	var out []Behaviour
	for _, b := range behaviours() {
		if b.Name != "" && !b.passive {
			out = append(out, b)
		}
	}
	return out
}

// LookupEvent returns the event registered under name.
func LookupEvent(name string) (Event, bool) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	ev, ok := registry.byName[name]
	return ev, ok && !behaviours()[ev].passive
}

// eventNamed returns the event called name, registering a passive one (no
// threshold, counted in the history only) for a name this process does not
// know, so a history written by a process with more behaviours keeps its
// counts. ok is false for an invalid name or a full registry.
func eventNamed(name string) (Event, bool) {
	if !validEventName(name) {
		return 0, false
	}
	ev, err := register(Behaviour{Name: name, passive: true})
	return ev, err == nil
}

// Behaviour returns the definition of e.
func (e Event) Behaviour() Behaviour {
	if l := behaviours(); int(e) < len(l) {
		return l[e]
	}
	return Behaviour{}
}

// String returns the event's stable name, as used in logs, ban reasons and
// the thresholds config section.
func (e Event) String() string {
	if l := behaviours(); e != 0 && int(e) < len(l) {
		return l[e].Name
	}
	return fmt.Sprintf("event(%d)", uint8(e))
}

func (e Event) valid() bool { return e != 0 && int(e) < numEvents() }

// banText returns the client-safe text of a behaviour ban with the given
// reason: an event name, or network_<name>.
func banText(reason string) string {
	network := false
	name := reason
	if n, ok := strings.CutPrefix(reason, networkPrefix); ok {
		if _, known := LookupEvent(reason); !known {
			name, network = n, true
		}
	}
	ev, ok := LookupEvent(name)
	if !ok {
		return reasonBannedManual
	}
	b := ev.Behaviour()
	if network && b.NetworkReason != "" {
		return b.NetworkReason
	}
	if b.Reason != "" {
		return b.Reason
	}
	return reasonBannedManual
}

// ThresholdsConfig maps a behaviour's name (or network_<name> for its
// network count) to its threshold. [DefaultConfig] holds the default of
// every registered behaviour; decoding TOML over it changes only the keys
// given, so
//
//	[shield.thresholds.auth_failure]
//	count = 5
//
// keeps the default window.
type ThresholdsConfig map[string]Threshold

// SetCount sets the count of the named threshold, keeping its window (or
// the registered default when the map lacks it).
func (t ThresholdsConfig) SetCount(name string, n int) {
	t.change(name, func(th *Threshold) { th.Count = n })
}

// SetDryRun sets the dry-run flag of the named threshold.
func (t ThresholdsConfig) SetDryRun(name string, on bool) {
	t.change(name, func(th *Threshold) { th.DryRun = on })
}

// change applies fn to the named threshold, starting from the registered
// default when the map lacks it.
func (t ThresholdsConfig) change(name string, fn func(*Threshold)) {
	th, ok := t[name]
	if !ok {
		th = defaultThresholds()[name]
	}
	fn(&th)
	t[name] = th
}

// DocOf returns the documentation of the named threshold, from its
// behaviour's Doc.
func (t ThresholdsConfig) DocOf(name string) string {
	if ev, ok := LookupEvent(name); ok {
		return ev.Behaviour().Doc
	}
	if base, ok := strings.CutPrefix(name, networkPrefix); ok {
		if _, ok := LookupEvent(base); ok {
			if ev, _ := LookupEvent(base); ev.Behaviour().Guessing {
				return base + " counted per network (guessing.ipv4_prefix/guessing.ipv6_prefix), for guessing spread over many addresses; crossing it bans the network, except its known-good addresses"
			}
			return base + " counted per network (ipv4_prefix/ipv6_prefix), for a flood spread over many addresses; crossing it bans the network"
		}
	}
	return ""
}

// UnmarshalTOML merges a [thresholds] table into t: for every name given,
// only the keys given change.
func (t *ThresholdsConfig) UnmarshalTOML(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return errors.New("thresholds: want a table of thresholds")
	}
	if *t == nil {
		*t = make(ThresholdsConfig)
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tab, ok := m[name].(map[string]any)
		if !ok {
			return fmt.Errorf("thresholds.%s: want a table (count, window, dry_run)", name)
		}
		th := (*t)[name]
		keys := make([]string, 0, len(tab))
		for k := range tab {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			x := tab[k]
			// Reported by Validate, which names the key, so the config
			// loader can point at its line; worded as its own type errors.
			bad := ""
			switch k {
			case "count":
				n, ok := x.(int64)
				switch {
				case !ok:
					bad = wrongType("a number", x)
				case n < 0 || n > 1<<31:
					bad = fmt.Sprintf("out of range: want 0 to %d, got %d", 1<<31, n)
				}
				th.Count = int(n)
			case "window":
				str, ok := x.(string)
				d, err := time.ParseDuration(str)
				switch {
				case !ok:
					bad = wrongType(`a duration such as "10m"`, x)
				case err != nil:
					bad = fmt.Sprintf(`not a duration: want e.g. "30s", "10m", "24h", got %q`, str)
				}
				th.Window = d
			case "dry_run":
				var ok bool
				if th.DryRun, ok = x.(bool); !ok {
					bad = wrongType("true or false", x)
				}
			default:
				bad = "unknown key (want count, window, dry_run)"
			}
			if bad != "" {
				th.badKey, th.badMsg = k, bad
			}
		}
		(*t)[name] = th
	}
	return nil
}

// wrongType words a value of the wrong type as agua's config loader does:
// `wrong type: want a number, got "ten" (a string)`.
func wrongType(want string, x any) string {
	got, kind := fmt.Sprint(x), fmt.Sprintf("%T", x)
	switch v := x.(type) {
	case string:
		got, kind = strconv.Quote(v), "a string"
	case int64:
		kind = "a number"
	case float64:
		kind = "a decimal number"
	case bool:
		kind = "true or false"
	case []any:
		kind = "a list"
	case map[string]any:
		kind = "a table"
	}
	return "wrong type: want " + want + ", got " + got + " (" + kind + ")"
}

// defaultThresholds returns the thresholds of every registered behaviour.
func defaultThresholds() ThresholdsConfig {
	t := make(ThresholdsConfig)
	for _, b := range behaviours() {
		if b.Name == "" || b.passive {
			continue
		}
		if b.Threshold.Count > 0 {
			t[b.Name] = b.Threshold
		}
		if b.Network.Count > 0 {
			t[networkPrefix+b.Name] = b.Network
		}
	}
	return t
}

// validate reports unknown names and every counted behaviour whose
// threshold is missing, zero or negative.
func (t ThresholdsConfig) validate(bad func(field, format string, args ...any)) {
	need := defaultThresholds()
	names := make([]string, 0, len(t)+len(need))
	for n := range t {
		names = append(names, n)
	}
	for n := range need {
		if _, ok := t[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		base := strings.TrimPrefix(n, networkPrefix)
		if _, ok := LookupEvent(n); !ok {
			if _, ok := LookupEvent(base); !ok || base == n {
				bad("thresholds."+n, "no such behaviour (registered: %s)", registeredNames())
				continue
			}
		}
		th := t[n]
		if th.badKey != "" {
			bad("thresholds."+n+"."+th.badKey, "%s", th.badMsg)
			continue
		}
		if th.Count <= 0 {
			bad("thresholds."+n+".count", "must be > 0")
		}
		if th.Window <= 0 {
			bad("thresholds."+n+".window", "must be > 0 (e.g. \"10m\")")
		}
	}
}

func registeredNames() string {
	var names []string
	for _, b := range Behaviours() {
		names = append(names, b.Name)
	}
	return strings.Join(names, ", ")
}

// eventRule is a behaviour as one Shield applies it: its thresholds after
// the config, and its ban decisions precomputed.
type eventRule struct {
	ev       Event
	b        Behaviour
	name     string
	netName  string
	th, net  Threshold
	decision Decision // the dry-run refusal of a host ban
	rep      float64  // weight in the reputation score
}

// compileRules builds the rules of every registered event from cfg.
func compileRules(cfg *Config) []eventRule {
	bs := behaviours()
	rules := make([]eventRule, len(bs))
	for i, b := range bs {
		if i == 0 {
			continue
		}
		r := eventRule{ev: Event(i), b: b, name: b.Name, netName: networkPrefix + b.Name}
		if th, ok := cfg.Thresholds[b.Name]; ok {
			r.th = th
		} else {
			r.th = b.Threshold
		}
		if th, ok := cfg.Thresholds[r.netName]; ok {
			r.net = th
		} else {
			r.net = b.Network
		}
		text := b.Reason
		if text == "" {
			text = reasonBannedManual
		}
		r.rep = cfg.Reputation.Weights.weight(b.Name)
		r.decision = Decision{Action: cfg.BanAction, Temporary: b.Temporary, Reason: text, Source: "ban:" + b.Name}
		rules[i] = r
	}
	return rules
}

// rule returns how s applies ev, or nil for an unregistered event. Events
// registered after New are picked up on first use.
func (s *Shield) rule(ev Event) *eventRule {
	if rs := *s.rules.Load(); int(ev) < len(rs) {
		if ev == 0 {
			return nil
		}
		return &rs[ev]
	}
	return s.newRule(ev)
}

// newRule is rule for an event registered after the rules were compiled:
// they are compiled again. Apart from rule, so that rule's look-up (twice
// per accepted message) allocates nothing: the slice stored here escapes.
func (s *Shield) newRule(ev Event) *eventRule {
	if !ev.valid() {
		return nil
	}
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	rs := compileRules(s.cfg())
	s.rules.Store(&rs)
	if int(ev) >= len(rs) {
		return nil
	}
	return &rs[ev]
}
