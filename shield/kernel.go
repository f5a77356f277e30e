package shield

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gaissmai/bart"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Kernel offload ([shield.kernel]): what the shield would drop anyway —
// prefixes denied by drop rules, an operator's drop blocks, and behaviour
// bans past an escalation level — is mirrored into nftables sets in the
// shield's own table, so the kernel drops those clients' packets to the
// listeners' ports before a socket, an accept or a goroutine is spent on
// them. Talks netlink directly (github.com/google/nftables): every change
// is one batched transaction, no nft process is run.
//
// The table (inet family, default "agua") holds:
//
//	set ports  { type inet_service }                  the listeners' ports
//	set deny4  { type ipv4_addr; flags interval,timeout }
//	set deny6  { type ipv6_addr; flags interval,timeout }
//	chain prerouting { type filter hook prerouting priority raw; policy accept;
//	    meta nfproto ipv4 meta l4proto tcp th dport @ports ip saddr @deny4 counter drop
//	    meta nfproto ipv6 meta l4proto tcp th dport @ports ip6 saddr @deny6 counter drop }
//
// Elements carry the ban's remaining time as their timeout; rules are
// permanent. Prefixes that overlap an allowlisted address or a trusted
// proxy are never mirrored (the shield's own rules keep deciding there),
// nor are dry-run rules, temporary (rate) bans and network bans that spare
// known-good addresses. The table is created afresh at start (a table left
// by a crash is replaced: a re-sync) and removed by Close.

// KernelConfig configures the kernel offload.
type KernelConfig struct {
	Enabled  bool   `toml:"enabled" doc:"mirror drop rules, drop blocks and escalated bans into nftables sets so the kernel drops those clients' packets to the listeners' ports (Linux, needs CAP_NET_ADMIN; agua refuses to start without it)"`
	Table    string `toml:"table" doc:"name of the nftables table (inet family) the shield owns: created at start, replaced if left over, removed at shutdown"`
	BanLevel int    `toml:"ban_level" doc:"behaviour bans from this escalation level on (1: every ban, 2: from the first repeat) are mirrored into the kernel"`
}

func defaultKernel() KernelConfig { return KernelConfig{Table: "agua", BanLevel: 2} }

func (k KernelConfig) validate(bad func(field, format string, args ...any)) {
	if !validEventName(k.Table) {
		bad("kernel.table", "must be 1 to 64 of a-z, 0-9 and _")
	}
	if k.BanLevel < 1 {
		bad("kernel.ban_level", "must be >= 1")
	}
}

// ErrKernelPermission is returned by New when [shield.kernel] is enabled
// without CAP_NET_ADMIN.
var ErrKernelPermission = errors.New("shield kernel offload needs CAP_NET_ADMIN (run as root or grant the capability, e.g. AmbientCapabilities=CAP_NET_ADMIN), or set [shield.kernel] enabled = false")

// KernelStats are the kernel's drops, read back from the rules' counters.
type KernelStats struct {
	Enabled  bool   `json:"enabled"`
	Elements int    `json:"elements"` // prefixes in the sets
	Packets  uint64 `json:"dropped_packets"`
	Bytes    uint64 `json:"dropped_bytes"`
	Errors   uint64 `json:"errors"` // transactions that failed (logged)
}

// kernel is the offload's state, under mu.
type kernel struct {
	mu      sync.Mutex
	conn    *nftables.Conn
	table   *nftables.Table
	chain   *nftables.Chain
	sets    [2]*nftables.Set // deny4, deny6
	ports   *nftables.Set
	written map[netip.Prefix]time.Time // what the sets hold; zero time: no timeout
	portsIn map[uint16]bool
	// what the last sync saw, to skip a sync when nothing changed
	bans   *bart.Table[*ban]
	pol    *policy
	nPorts int
	lastAt time.Time

	packets, bytes uint64
	errors         uint64
	seen           map[netip.Prefix]uint64 // per-element packets already counted
	lastCount      time.Time
}

// openKernel creates the table, sets and rules (replacing a table left by
// a crash) when cfg enables the offload.
func (s *Shield) openKernel(cfg *Config, netns string) error {
	if !cfg.Kernel.Enabled {
		return nil
	}
	var opts []nftables.ConnOption
	if netns != "" {
		f, err := os.Open(netns)
		if err != nil {
			return fmt.Errorf("shield kernel: network namespace: %w", err)
		}
		defer f.Close()
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())), nftables.AsLasting())
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return kernelErr(err)
	}
	k := &kernel{conn: c, written: map[netip.Prefix]time.Time{}, portsIn: map[uint16]bool{}, seen: map[netip.Prefix]uint64{}}
	k.table = &nftables.Table{Family: nftables.TableFamilyINet, Name: cfg.Kernel.Table}
	// Re-sync: whatever a previous process left is replaced as a whole.
	if old, err := c.ListTableOfFamily(k.table.Name, k.table.Family); err == nil && old != nil {
		c.DelTable(k.table)
		if err := c.Flush(); err != nil {
			return kernelErr(err)
		}
	} else if err != nil && isPerm(err) {
		return kernelErr(err)
	}
	c.AddTable(k.table)
	k.ports = &nftables.Set{Table: k.table, Name: "ports", KeyType: nftables.TypeInetService}
	// Per-element counters: each prefix's drops are read back into the
	// denial log and the history, as if the shield had dropped them.
	k.sets[0] = &nftables.Set{Table: k.table, Name: "deny4", KeyType: nftables.TypeIPAddr, Interval: true, HasTimeout: true, Counter: true}
	k.sets[1] = &nftables.Set{Table: k.table, Name: "deny6", KeyType: nftables.TypeIP6Addr, Interval: true, HasTimeout: true, Counter: true}
	for _, set := range []*nftables.Set{k.ports, k.sets[0], k.sets[1]} {
		if err := c.AddSet(set, nil); err != nil {
			return kernelErr(err)
		}
	}
	k.chain = c.AddChain(&nftables.Chain{Name: "prerouting", Table: k.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	for i, fam := range []byte{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6} {
		off, n := uint32(12), uint32(4) // IPv4 source address
		if i == 1 {
			off, n = 8, 16 // IPv6 source address
		}
		c.AddRule(&nftables.Rule{Table: k.table, Chain: k.chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: k.ports.Name, SetID: k.ports.ID},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: 1, SetName: k.sets[i].Name, SetID: k.sets[i].ID},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	if err := c.Flush(); err != nil {
		return kernelErr(err)
	}
	s.kern = k
	s.log.Info("shield kernel offload on", "table", "inet "+k.table.Name)
	return nil
}

func isPerm(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)
}

func kernelErr(err error) error {
	if isPerm(err) {
		return fmt.Errorf("%w: %v", ErrKernelPermission, err)
	}
	return fmt.Errorf("shield kernel offload: nftables: %w", err)
}

// closeKernel removes the table.
func (s *Shield) closeKernel() error {
	k := s.kern
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conn.DelTable(k.table)
	err := k.conn.Flush()
	k.conn.CloseLasting()
	if err != nil {
		return fmt.Errorf("shield kernel offload: removing table %s: %w", k.table.Name, err)
	}
	return nil
}

// kernelReconfigure refuses to turn the offload on or off, or move it,
// at run time: the table is set up at start.
func (s *Shield) kernelReconfigure(old, cfg *Config) error {
	if old.Kernel.Enabled != cfg.Kernel.Enabled || old.Kernel.Table != cfg.Kernel.Table {
		return errors.New("kernel.enabled, kernel.table: a change needs a restart (the nftables table is set up at start)")
	}
	return nil
}

// kernelSync brings the sets in line with the bans and rules in force;
// cheap when nothing changed.
func (s *Shield) kernelSync() {
	k := s.kern
	if k == nil {
		return
	}
	now := s.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	bans, pol := s.bans.Load(), s.pol.Load()
	s.lnMu.Lock()
	nPorts := len(s.listeners)
	s.lnMu.Unlock()
	// Elements expire in the kernel by themselves; a ban that expired may
	// uncover a narrower one, so a sync runs at least every few seconds.
	if bans == k.bans && pol == k.pol && nPorts == k.nPorts && now.Sub(k.lastAt) < 5*time.Second {
		return
	}
	k.bans, k.pol, k.nPorts, k.lastAt = bans, pol, nPorts, now

	want := s.kernelWant(pol, bans, now)
	var add, del [2][]nftables.SetElement
	for p, exp := range k.written {
		if w, ok := want[p]; !ok || !w.Equal(exp) {
			if exp.IsZero() || now.Before(exp) { // an expired element is gone already
				i, el := kernelElements(p, time.Time{}, now)
				del[i] = append(del[i], el...)
			}
			delete(k.written, p)
		}
	}
	for p, exp := range want {
		if _, ok := k.written[p]; ok {
			continue
		}
		i, el := kernelElements(p, exp, now)
		if el == nil {
			continue
		}
		add[i] = append(add[i], el...)
		k.written[p] = exp
	}
	var ports []nftables.SetElement
	s.lnMu.Lock()
	for _, l := range s.listeners {
		if a, ok := l.inner.Addr().(*net.TCPAddr); ok && !k.portsIn[uint16(a.Port)] {
			k.portsIn[uint16(a.Port)] = true
			ports = append(ports, nftables.SetElement{Key: binary.BigEndian.AppendUint16(nil, uint16(a.Port))})
		}
	}
	s.lnMu.Unlock()
	if len(ports)+len(add[0])+len(add[1])+len(del[0])+len(del[1]) == 0 {
		return
	}
	for i := range 2 {
		if len(del[i]) > 0 {
			k.conn.SetDeleteElements(k.sets[i], del[i])
		}
		if len(add[i]) > 0 {
			k.conn.SetAddElements(k.sets[i], add[i])
		}
	}
	if len(ports) > 0 {
		k.conn.SetAddElements(k.ports, ports)
	}
	if err := k.conn.Flush(); err != nil {
		k.errors++
		s.log.Error("shield kernel sync failed; a full re-sync follows", "err", err)
		// Start over: delete what we think is there at the next sync.
		k.written = map[netip.Prefix]time.Time{}
		k.conn.FlushSet(k.sets[0])
		k.conn.FlushSet(k.sets[1])
		k.conn.Flush()
		k.bans = nil
	}
}

// kernelWant is what the sets should hold: the widest of the prefixes the
// shield drops for good or for a long while, none overlapping an allowed
// or trusted address. The value is the expiry (zero: none).
func (s *Shield) kernelWant(pol *policy, bans *bart.Table[*ban], now time.Time) map[netip.Prefix]time.Time {
	cfg := s.cfg()
	cands := new(bart.Table[time.Time])
	if cfg.DryRun {
		return nil
	}
	exempt := new(bart.Lite)
	for i := range pol.rules {
		r := &pol.rules[i]
		if r.allow {
			exempt.Insert(r.prefix)
		}
	}
	for p := range pol.trusted.All() {
		exempt.Insert(p)
	}
	for i := range pol.rules {
		r := &pol.rules[i]
		if r.allow || r.dryRun || r.action != Drop {
			continue
		}
		if cur := pol.lookupPrefix(r.prefix); cur != r || cur.prefix != r.prefix {
			continue // a later rule for the same prefix wins
		}
		cands.Insert(r.prefix, time.Time{})
	}
	for p, b := range bans.All() {
		if !now.Before(b.expires) || b.spareGood || b.decision.Temporary {
			continue
		}
		if !(b.manual && b.action == Drop) && !(!b.manual && b.count >= cfg.Kernel.BanLevel) {
			continue
		}
		if old, ok := cands.Get(p); ok && (old.IsZero() || old.After(b.expires)) {
			continue
		}
		cands.Insert(p, b.expires)
	}
	want := make(map[netip.Prefix]time.Time)
	for p, exp := range cands.All() {
		if exempt.LookupPrefix(p) {
			continue
		}
		overlaps := false
		for range exempt.Subnets(p) {
			overlaps = true
			break
		}
		if overlaps {
			continue
		}
		covered := false
		for sp := range cands.Supernets(p) {
			if sp != p {
				covered = true
				break
			}
		}
		if !covered {
			want[p] = exp
		}
	}
	return want
}

// kernelElements returns the set index (0: IPv4, 1: IPv6) and the interval
// elements of p: its first address and, flagged as the interval's end,
// the address after its last. nil when p ends at the top of the address
// space (no end element can be written; the shield keeps deciding).
func kernelElements(p netip.Prefix, exp, now time.Time) (int, []nftables.SetElement) {
	p = p.Masked()
	i := 0
	if p.Addr().Is6() {
		i = 1
	}
	last := LastAddr(p)
	end := last.Next()
	if !end.IsValid() || (i == 0 && !end.Is4()) {
		return i, nil
	}
	var ttl time.Duration
	if !exp.IsZero() {
		ttl = exp.Sub(now)
		if ttl < time.Second {
			return i, nil
		}
		ttl = ttl.Truncate(time.Millisecond)
	}
	return i, []nftables.SetElement{
		{Key: p.Addr().AsSlice(), Timeout: ttl},
		{Key: end.AsSlice(), IntervalEnd: true},
	}
}

// kernelCount reads the per-element counters and adds each prefix's new
// drops to the denial log and the history (source "kernel"), so reports
// and the dashboard count what the kernel dropped. At most every few
// seconds unless force.
func (s *Shield) kernelCount(force bool) {
	k := s.kern
	if k == nil {
		return
	}
	now := s.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !force && now.Sub(k.lastCount) < 5*time.Second {
		return
	}
	k.lastCount = now
	starts := make(map[netip.Addr]netip.Prefix, len(k.written))
	for p := range k.written {
		starts[p.Masked().Addr()] = p
	}
	seen := make(map[netip.Prefix]uint64, len(k.seen))
	for _, set := range k.sets {
		els, err := k.conn.GetSetElements(set)
		if err != nil {
			continue
		}
		for _, el := range els {
			if el.IntervalEnd || el.Counter == nil {
				continue
			}
			a, ok := netip.AddrFromSlice(el.Key)
			if !ok {
				continue
			}
			p, ok := starts[a.Unmap()]
			if !ok {
				continue
			}
			seen[p] = el.Counter.Packets
			if d := el.Counter.Packets - min(k.seen[p], el.Counter.Packets); d > 0 {
				s.agg.addN(p, "kernel", Drop, false, d)
			}
		}
	}
	k.seen = seen
}

// kernelStats reads the rules' counters.
func (s *Shield) kernelStats() KernelStats {
	k := s.kern
	if k == nil {
		return KernelStats{}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st := KernelStats{Enabled: true, Elements: len(k.written), Errors: k.errors}
	rules, err := k.conn.GetRules(k.table, k.chain)
	if err != nil {
		st.Packets, st.Bytes = k.packets, k.bytes
		return st
	}
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				st.Packets += c.Packets
				st.Bytes += c.Bytes
			}
		}
	}
	k.packets, k.bytes = st.Packets, st.Bytes
	return st
}
