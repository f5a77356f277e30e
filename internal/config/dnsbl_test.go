package config

import (
	"errors"
	"strings"
	"testing"
)

func TestDNSBLProblemsWithLocation(t *testing.T) {
	src := `data_dir = "x"

[dnsbl]
lists = ["zen.example=127.0.0.[2..11]*3", "wl.example=127.0.0.[9..2]*-2"]
threshold = 0
action = "bounce"
`
	_, err := Parse("bad.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	got := map[string]Problem{}
	for _, p := range ce.Problems {
		got[p.Key] = p
	}
	for key, line := range map[string]int{"dnsbl.lists": 4, "dnsbl.threshold": 5, "dnsbl.action": 6} {
		if p, ok := got[key]; !ok || p.Line != line || p.File != "bad.toml" {
			t.Errorf("%s: want line %d, got %+v (all: %v)", key, line, p, ce.Problems)
		}
	}
	if p := got["dnsbl.lists"]; !strings.Contains(p.Msg, `[1]`) || !strings.Contains(p.Msg, "[9..2]") {
		t.Errorf("lists problem does not say which entry: %q", p.Msg)
	}

	c, err := Parse("good.toml", []byte("[dnsbl]\nlists = [\"zen.example=127.0.0.[2..11]*3\", \"wl.example*-2\"]\nthreshold = 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	sites, err := c.DNSBL.Sites()
	if err != nil || len(sites) != 2 || sites[0].Weight != 3 || sites[1].Weight != -2 {
		t.Fatalf("sites %+v, %v", sites, err)
	}
	if len(Default().DNSBL.Lists) != 0 {
		t.Error("lists configured by default")
	}
}
