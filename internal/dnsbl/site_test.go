package dnsbl

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseSite(t *testing.T) {
	for _, tc := range []struct {
		in     string
		name   string
		weight int
		match  []string
		miss   []string
	}{
		{"zen.example", "zen.example", 1, []string{"127.0.0.2", "127.1.2.3"}, nil},
		{"zen.example=127.0.0.[2..11]*3", "zen.example", 3, []string{"127.0.0.2", "127.0.0.11"}, []string{"127.0.0.1", "127.0.0.12", "127.0.1.2"}},
		{"wl.example=127.0.[0..255].[0..255]*-2", "wl.example", -2, []string{"127.0.9.3"}, []string{"127.1.0.0"}},
		{"b.example=127.0.0.2;127.0.0.[4;6..7]", "b.example", 1, []string{"127.0.0.2", "127.0.0.4", "127.0.0.7"}, []string{"127.0.0.3", "127.0.0.5"}},
		{"UPPER.Example.", "upper.example", 1, nil, nil},
	} {
		s, err := ParseSite(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if s.Name != tc.name || s.Weight != tc.weight {
			t.Errorf("%q: name %q weight %d, want %q %d", tc.in, s.Name, s.Weight, tc.name, tc.weight)
		}
		for _, m := range tc.match {
			if !s.Matches(netip.MustParseAddr(m)) {
				t.Errorf("%q does not match %s", tc.in, m)
			}
		}
		for _, m := range tc.miss {
			if s.Matches(netip.MustParseAddr(m)) {
				t.Errorf("%q matches %s", tc.in, m)
			}
		}
	}
}

func TestParseSiteErrors(t *testing.T) {
	for _, in := range []string{
		"", "nodot", "zen.example*", "zen.example*x", "zen.example*0", "zen.example=", "zen.example=127.0.0",
		"zen.example=127.0.0.256", "zen.example=127.0.0.[5..2]", "zen.example=127.0.0.[a]", "bad name.example",
		"zen.example=127.0.0.-1", "zen.example*99999",
	} {
		if _, err := ParseSite(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: err %v, want ErrSyntax", in, err)
		}
	}
}

func TestQueryName(t *testing.T) {
	if got := QueryName(netip.MustParseAddr("192.0.2.99"), "zen.example"); got != "99.2.0.192.zen.example" {
		t.Errorf("v4: %s", got)
	}
	want := "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.zen.example"
	if got := QueryName(netip.MustParseAddr("4321:0:1:2:3:4:567:89ab"), "zen.example"); got != want {
		t.Errorf("v6: %s", got)
	}
}

// FuzzParseSite: any input is a Site or ErrSyntax, never a panic, and a
// parsed site's pattern only matches IPv4 answers.
func FuzzParseSite(f *testing.F) {
	for _, s := range []string{"zen.example=127.0.0.[2..11]*3", "wl.example=127.0.[0..255].[0..255]*-2", "b.example=127.0.0.2;127.0.0.[4;6..7]", "x.example=[", "y.example=1.2.3.[]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		site, err := ParseSite(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("%q: untyped error %v", s, err)
			}
			return
		}
		if site.Weight == 0 || site.Name == "" || site.Matches(netip.MustParseAddr("::1")) {
			t.Fatalf("%q: %+v", s, site)
		}
	})
}
