package autoconfig

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/dnsrecords"
)

func handler(domains func(context.Context) ([]string, error)) *Handler {
	return &Handler{
		Services: dnsrecords.Services{Host: "mail.example.net", IMAPS: dnsrecords.Service{Port: 993, TLS: true},
			Submission: dnsrecords.Service{Port: 587}},
		Domains: domains,
		MTASTS:  dnsrecords.PolicyParams{Mode: "enforce", MaxAge: 24 * time.Hour},
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func do(h http.Handler, method, host, target, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Host = host
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestHandlerEdges(t *testing.T) {
	local := func(context.Context) ([]string, error) { return []string{"example.org"}, nil }
	h := handler(local)

	// The policy names this server and the configured mode; the Host
	// header's port and case do not matter.
	w := do(h, "GET", "MTA-STS.Example.org:8443", "/.well-known/mta-sts.txt", "")
	if w.Code != 200 || w.Body.String() != dnsrecords.Policy("mail.example.net", h.MTASTS) || !strings.Contains(w.Body.String(), "mode: enforce\r\n") {
		t.Errorf("policy: %d %q", w.Code, w.Body.String())
	}
	// Only what is offered is announced: STARTTLS submission, no POP3.
	w = do(h, "GET", "autoconfig.example.org", "/mail/config-v1.1.xml", "")
	if b := w.Body.String(); w.Code != 200 || strings.Contains(b, "pop3") || !strings.Contains(b, "<port>587</port>") || !strings.Contains(b, "<socketType>STARTTLS</socketType>") {
		t.Errorf("autoconfig: %d\n%s", w.Code, b)
	}
	if w = do(h, "HEAD", "autoconfig.example.org", "/mail/config-v1.1.xml", ""); w.Code != 200 {
		t.Errorf("HEAD: %d", w.Code)
	}
	// An XML-looking address is refused, not echoed into a document.
	if w = do(h, "GET", "example.org", "/apple/mobileconfig?emailaddress=%3Ckey%3E@example.org", ""); w.Code != 400 {
		t.Errorf("mobileconfig with markup: %d", w.Code)
	}
	// A request body over the bound is refused.
	big := `<Autodiscover xmlns="` + requestNS + `"><Request><EMailAddress>` + strings.Repeat("a", maxRequestBody) + `@example.org</EMailAddress></Request></Autodiscover>`
	if w = do(h, "POST", "example.org", "/Autodiscover/Autodiscover.xml", big); w.Code != 400 {
		t.Errorf("oversized autodiscover: %d", w.Code)
	}
	// The directory failing is a temporary error, not "unknown domain".
	broken := handler(func(context.Context) ([]string, error) { return nil, errors.New("database is locked") })
	if w = do(broken, "GET", "mta-sts.example.org", "/.well-known/mta-sts.txt", ""); w.Code != 503 || strings.Contains(w.Body.String(), "locked") {
		t.Errorf("directory failure: %d %q", w.Code, w.Body.String())
	}
}
