package shield

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/agua-mail/agua/internal/atomicfile"
)

// historyFile is the name of the persisted history inside Options.StateDir:
// JSON lines, appended on every fold (then fsync), and rewritten whole
// (temporary file, fsync, rename) at start and when it has grown to twice
// its compacted size. A torn last line after a crash is skipped.
const historyFile = "shield-history.jsonl"

func histPath(stateDir string) string { return filepath.Join(stateDir, historyFile) }

// histLine is one line of the history file. Kinds: "d" a folded delta (a
// record and the timeline), "b" a ban or unban (with the timeline); in a
// compacted file "r" a record, "t" the timeline of a minute, "B" a ban or
// unban, each without touching the timeline.
type histLine struct {
	K  string            `json:"k"`
	A  netip.Prefix      `json:"a,omitzero"`
	M  int64             `json:"m,omitempty"` // unix minute
	F  int64             `json:"f,omitempty"` // first, unix ns
	L  int64             `json:"l,omitempty"` // last, unix ns
	Ad uint64            `json:"ad,omitempty"`
	Ag uint64            `json:"ag,omitempty"`
	E  []uint64          `json:"e,omitempty"`  // by event number, files written before events were named (legacyEvents)
	EN map[string]uint64 `json:"en,omitempty"` // by event name
	R  []lineRef         `json:"r,omitempty"`
	RA []uint64          `json:"ra,omitempty"` // "t": refused by action, [0] = would block
	S  []lineRef         `json:"s,omitempty"`  // "t": refused by source class
	Bn uint64            `json:"bn,omitempty"`
	Un uint64            `json:"un,omitempty"`
	B  *BanEvent         `json:"b,omitempty"`
}

type lineRef struct {
	S string `json:"s"`
	A Action `json:"a,omitempty"`
	D bool   `json:"d,omitempty"`
	N uint64 `json:"n"`
}

func appendLine(buf []byte, l histLine) []byte {
	b, err := json.Marshal(l)
	if err != nil {
		return buf
	}
	buf = append(buf, b...)
	return append(buf, '\n')
}

// legacyEvents names the event numbers of history files written before
// events were registered by name (field "e"). They are names read from a
// file, not definitions: a process that registered no such behaviour keeps
// the counts under the name.
var legacyEvents = [...]string{1: "auth_failure", 2: "auth_success", 3: "unknown_recipient", 4: "protocol_error",
	5: "pregreet", 6: "message", 7: "recipient"}

// eventsByName turns counts by Event into counts by name, nil when empty.
func eventsByName[T uint32 | uint64](ev []T) map[string]uint64 {
	var out map[string]uint64
	for i, n := range ev {
		if n > 0 && Event(i).valid() {
			if out == nil {
				out = make(map[string]uint64)
			}
			out[Event(i).String()] += uint64(n)
		}
	}
	return out
}

// eventCounts reads l's counts by name (and legacy number) into counts by
// Event, calling add for each.
func (l *histLine) eventCounts(add func(ev Event, n uint64)) {
	for i, n := range l.E {
		if i < len(legacyEvents) && legacyEvents[i] != "" && n > 0 {
			if ev, ok := eventNamed(legacyEvents[i]); ok {
				add(ev, n)
			}
		}
	}
	for name, n := range l.EN {
		if ev, ok := eventNamed(name); ok && n > 0 {
			add(ev, n)
		}
	}
}

// growTo makes s long enough to index ev.
func growTo[T uint32 | uint64](s []T, ev Event) []T {
	if int(ev) >= len(s) {
		s = append(s, make([]T, int(ev)+1-len(s))...)
	}
	return s
}

// appendRecLine appends the line of record r of where (kinds "d" and "r")
// in histLine's form, by hand: a fold writes one such line for every address active in the
// minute (80,000 a minute at 1,300 sessions/s), and json.Marshal of each
// — with its map of event names — was the fold's largest cost (82 MB and
// ~100 ms a minute, BenchmarkFoldHistory80k; issue 13's minutely stall).
// TestRecLineDecodes holds it to appendLine's form.
func appendRecLine(b []byte, kind string, where netip.Prefix, r *histRec) []byte {
	b = append(b, `{"k":`...)
	b = appendJSONString(b, kind)
	if where.IsValid() {
		b = append(b, `,"a":"`...)
		b = where.AppendTo(b)
		b = append(b, '"')
	}
	inum := func(name string, v int64) {
		if v != 0 {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, '"', ':')
			b = strconv.AppendInt(b, v, 10)
		}
	}
	inum("m", r.minute)
	inum("f", r.first)
	inum("l", r.last)
	inum("ad", int64(r.admitted)) // uint32: no overflow
	inum("ag", int64(r.admittedGood))
	n := 0
	for i, c := range r.events {
		if c == 0 || !Event(i).valid() {
			continue
		}
		if n == 0 {
			b = append(b, `,"en":{`...)
		} else {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, Event(i).String())
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(c), 10)
	}
	if n > 0 {
		b = append(b, '}')
	}
	for i, rc := range r.refused {
		if i == 0 {
			b = append(b, `,"r":[`...)
		} else {
			b = append(b, ',')
		}
		b = append(b, `{"s":`...)
		b = appendJSONString(b, rc.source)
		if rc.action != 0 {
			b = append(b, `,"a":`...)
			b = appendJSONString(b, rc.action.String())
		}
		if rc.dryRun {
			b = append(b, `,"d":true`...)
		}
		b = append(b, `,"n":`...)
		b = strconv.AppendUint(b, uint64(rc.n), 10)
		b = append(b, '}')
	}
	if len(r.refused) > 0 {
		b = append(b, ']')
	}
	return append(b, '}', '\n')
}

func (l *histLine) rec() *histRec {
	r := &histRec{minute: l.M, first: l.F, last: l.L, admitted: clamp32(l.Ad), admittedGood: clamp32(l.Ag)}
	l.eventCounts(func(ev Event, n uint64) {
		r.events = growTo(r.events, ev)
		addSat32(&r.events[ev], clamp32(n))
	})
	for _, x := range l.R {
		if x.A <= Tarpit {
			r.addRefusal(refCount{source: x.S, action: x.A, dryRun: x.D, n: clamp32(x.N)})
		}
	}
	return r
}

func clamp32(n uint64) uint32 { return uint32(min(n, uint64(^uint32(0)))) }

func banLine(kind string, e BanEvent) histLine { return histLine{K: kind, B: &e} }

func totalsLine(m int64, t *minuteTotals) histLine {
	l := histLine{K: "t", M: m, Ad: t.admitted, Ag: t.admittedGood, EN: eventsByName(t.events), Bn: t.bans, Un: t.unbans}
	if t.refused != [4]uint64{} {
		l.RA = t.refused[:]
	}
	for _, sc := range t.sources {
		l.S = append(l.S, lineRef{S: sc.class, N: sc.n})
	}
	return l
}

func (l *histLine) totals() *minuteTotals {
	t := &minuteTotals{admitted: l.Ad, admittedGood: l.Ag, bans: l.Bn, unbans: l.Un}
	l.eventCounts(func(ev Event, n uint64) {
		t.events = growTo(t.events, ev)
		t.events[ev] += n
	})
	for i := 0; i < len(l.RA) && i < len(t.refused); i++ {
		t.refused[i] = l.RA[i]
	}
	for _, s := range l.S {
		t.addSource(s.S, s.N)
	}
	return t
}

// open loads the history file, compacts it and opens it for appending.
func (h *history) open(path string, now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(path, now); err != nil {
		return err // not persisted: an unreadable file is not overwritten
	}
	h.path = path
	h.persisted.Store(true)
	return h.compactLocked() // on failure, retried at the next fold
}

// load reads a history file (read-only use).
func (h *history) load(path string, now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.loadLocked(path, now)
}

func (h *history) loadLocked(path string, now time.Time) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("shield history: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	bad := 0
	for sc.Scan() {
		var l histLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			bad++
			continue
		}
		switch l.K {
		case "d", "r":
			h.apply(l.A, l.rec(), l.K == "d")
		case "t":
			if h.totals[l.M] == nil {
				h.totals[l.M] = l.totals()
			}
		case "b", "B":
			if l.B != nil && l.B.Prefix.IsValid() {
				h.addBan(*l.B, l.K == "b")
			}
		default:
			bad++
		}
	}
	if err := sc.Err(); err != nil {
		bad++
	}
	if bad > 0 {
		h.log.Warn("shield history: unreadable lines skipped", "file", path, "lines", bad)
	}
	h.expire(now)
	return nil
}

// compactLocked rewrites the file from memory: temporary file, fsync,
// rename, fsync of the folder; then reopens it for appending.
func (h *history) compactLocked() error {
	if h.path == "" {
		return nil
	}
	sw, err := newStateWriter(filepath.Dir(h.path), filepath.Base(h.path), "shield history")
	if err != nil {
		return err
	}
	size := int64(0)
	put := func(b []byte) {
		size += int64(len(b) - len(sw.b))
		sw.b = b
		sw.spill()
	}
	mins := make([]int64, 0, len(h.totals))
	for m := range h.totals {
		mins = append(mins, m)
	}
	sort.Slice(mins, func(i, j int) bool { return mins[i] < mins[j] })
	for _, m := range mins {
		put(appendLine(sw.b, totalsLine(m, h.totals[m])))
	}
	addrs := make([]netip.Prefix, 0, len(h.addrs))
	for p := range h.addrs {
		addrs = append(addrs, p)
	}
	sort.Slice(addrs, func(i, j int) bool { return prefixLess(addrs[i], addrs[j]) })
	for _, p := range addrs {
		for i := range h.addrs[p].recs {
			put(appendRecLine(sw.b, "r", p, &h.addrs[p].recs[i]))
		}
	}
	for _, b := range h.bans {
		put(appendLine(sw.b, banLine("B", b)))
	}
	if err := sw.commit(); err != nil {
		return err
	}
	if h.file != nil {
		h.file.Close()
	}
	h.file, err = os.OpenFile(h.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		h.file = nil
		return fmt.Errorf("shield history: %w", err)
	}
	h.size = size
	h.compact = h.size
	return nil
}

// persist appends lines and syncs; the file is compacted once it has grown
// to twice its compacted size (and at least 1 MiB). After a failed write
// (disk full) the file is rewritten whole from memory at the next fold.
func (h *history) persist(lines []byte) {
	if h.path == "" {
		return
	}
	if h.file == nil {
		if err := h.compactLocked(); err != nil {
			h.log.Error("shield history save failed", "err", err)
		}
		return
	}
	if len(lines) == 0 {
		return
	}
	// Synced a chunk at a time: a fold of a busy minute is megabytes, and
	// deliveries syncing meanwhile would wait for all of it.
	if err := atomicfile.WriteSync(h.file, lines); err != nil {
		h.log.Error("shield history save failed", "err", err)
		h.file.Close()
		h.file = nil
		return
	}
	h.size += int64(len(lines))
	if h.size > 2*h.compact+1<<20 {
		if err := h.compactLocked(); err != nil {
			h.log.Error("shield history compaction failed", "err", err)
		}
	}
}

// close closes the file.
func (h *history) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.file != nil {
		h.file.Close()
		h.file = nil
	}
	h.path = "" // closed: nothing more is written
	h.persisted.Store(false)
}
