package shield

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// deltaLine is a record's line as encoding/json would write it: the form
// appendRecLine writes by hand.
func deltaLine(kind string, where netip.Prefix, r *histRec) histLine {
	l := histLine{K: kind, A: where, M: r.minute, F: r.first, L: r.last, Ad: uint64(r.admitted), Ag: uint64(r.admittedGood),
		EN: eventsByName(r.events)}
	for _, rc := range r.refused {
		l.R = append(l.R, lineRef{S: rc.source, A: rc.action, D: rc.dryRun, N: uint64(rc.n)})
	}
	return l
}

// TestRecLineDecodes holds appendRecLine to encoding/json: each line,
// decoded, equals appendLine(deltaLine(...)) decoded — zero and huge
// counts, no address and both families, events registered or not, refusals
// with every action, dry runs and sources that need escaping.
func TestRecLineDecodes(t *testing.T) {
	wheres := []netip.Prefix{{}, netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/48"), netip.MustParsePrefix("10.0.0.0/8")}
	recs := []histRec{
		{},
		{minute: 29431264, first: 1765847045000000000, last: 1765847046000000000, admitted: 3, admittedGood: 1},
		{minute: -5, admitted: ^uint32(0), events: []uint32{0, 4, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9}},
		{minute: 1, refused: []refCount{{source: "shield.rules:3", action: Drop, n: 12}, {source: `we"ird\ \x01 ünï`, action: Allow, dryRun: true, n: 1},
			{source: "", action: Tarpit, n: ^uint32(0)}}},
	}
	recs[2].events[int(AuthSuccess)] = 2
	for _, where := range wheres {
		for i := range recs {
			for _, kind := range []string{"d", "r"} {
				got := appendRecLine([]byte("prefix"), kind, where, &recs[i])
				if !strings.HasPrefix(string(got), "prefix") || got[len(got)-1] != '\n' {
					t.Fatalf("line %q: not appended after the prefix, or no newline", got)
				}
				want := appendLine(nil, deltaLine(kind, where, &recs[i]))
				var g, w histLine
				if err := json.Unmarshal(got[len("prefix"):], &g); err != nil {
					t.Fatalf("line %q does not decode: %v", got, err)
				}
				if err := json.Unmarshal(want, &w); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(g, w) {
					t.Fatalf("line\n%s decodes to %+v\nencoding/json's\n%s to %+v", got, g, want, w)
				}
			}
		}
	}
}
