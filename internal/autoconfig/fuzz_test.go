package autoconfig

import (
	"context"
	"encoding/xml"
	"strings"
	"testing"
)

// FuzzAutodiscover feeds request bodies to the autodiscover endpoint: any
// body gets 200, 400 or 404, and a 200 is a well-formed response for an
// address of the local domain.
func FuzzAutodiscover(f *testing.F) {
	f.Add(`<Autodiscover xmlns="` + requestNS + `"><Request><EMailAddress>a@example.org</EMailAddress></Request></Autodiscover>`)
	f.Add(`<Autodiscover xmlns="` + requestNS + `"><Request><EMailAddress>a@b@example.org</EMailAddress></Request></Autodiscover>`)
	f.Add(`<!DOCTYPE x [<!ENTITY e "a@example.org">]><Autodiscover xmlns="` + requestNS + `"><Request><EMailAddress>&e;</EMailAddress></Request></Autodiscover>`)
	f.Add(`<Autodiscover><Request>`)
	h := handler(func(context.Context) ([]string, error) { return []string{"example.org"}, nil })
	f.Fuzz(func(t *testing.T, body string) {
		w := do(h, "POST", "autodiscover.example.org", "/autodiscover/autodiscover.xml", body)
		switch w.Code {
		case 400, 404:
		case 200:
			var r struct {
				Response struct {
					Account struct{ Protocol []struct{ LoginName string } }
				}
			}
			if err := xml.Unmarshal(w.Body.Bytes(), &r); err != nil || len(r.Response.Account.Protocol) == 0 ||
				!strings.HasSuffix(strings.ToLower(r.Response.Account.Protocol[0].LoginName), "@example.org") {
				t.Fatalf("200 with %v %q", err, w.Body.String())
			}
		default:
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}
