// Package autoconfig serves what mail clients and sending servers fetch
// over HTTP(S) to set themselves up for a local domain:
//
//   - Thunderbird autoconfig (the clientConfig v1.1 format of Mozilla's
//     ISPDB) at /.well-known/autoconfig/mail/config-v1.1.xml and, on host
//     autoconfig.DOMAIN, /mail/config-v1.1.xml, with ?emailaddress=;
//   - Outlook autodiscover, the "POX" protocol ([MS-OXDSCLI]): POST
//     /autodiscover/autodiscover.xml with the request XML;
//   - an Apple configuration profile (unsigned .mobileconfig property list
//     with one com.apple.mail.managed payload) at /apple/mobileconfig?emailaddress=;
//   - the MTA-STS policy (RFC 8461 3.3) at
//     mta-sts.DOMAIN/.well-known/mta-sts.txt.
//
// Only local domains are answered; any other gets 404. Users are never
// looked up: the documents are the same for every address of a domain, so
// they tell a prober nothing about which users exist.
package autoconfig

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/agua-mail/agua/internal/dnsrecords"
)

// Handler answers the autoconfiguration and MTA-STS requests.
type Handler struct {
	// Services are the host name and ports clients are told to use.
	Services dnsrecords.Services
	// Domains lists the local domains (accounts.Lookup.ListDomains); it is
	// called on every request so domains added by the CLI count at once.
	Domains func(ctx context.Context) ([]string, error)
	MTASTS  dnsrecords.PolicyParams
	Log     *slog.Logger
}

// maxRequestBody bounds the autodiscover request XML (a few hundred bytes
// in practice).
const maxRequestBody = 16 << 10

var errNotLocal = errors.New("not a local domain")

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if hp, _, err := net.SplitHostPort(host); err == nil {
		host = hp
	}
	host = strings.TrimSuffix(host, ".")
	path := strings.ToLower(r.URL.Path)
	switch {
	case path == "/.well-known/mta-sts.txt" && strings.HasPrefix(host, "mta-sts."):
		// RFC 8461 3.3: only at the mta-sts. name of the policy domain.
		h.get(w, r, strings.TrimPrefix(host, "mta-sts."), true, h.mtaSTS)
	case path == "/.well-known/autoconfig/mail/config-v1.1.xml" || path == "/mail/config-v1.1.xml":
		d, ok := domainOf(r.URL.Query().Get("emailaddress"))
		if !ok && r.URL.Query().Get("emailaddress") == "" {
			// Thunderbird asks autoconfig.DOMAIN first, and DOMAIN's
			// .well-known next; either names the domain.
			d, ok = strings.TrimPrefix(host, "autoconfig."), true
		}
		h.get(w, r, d, ok, h.thunderbird)
	case path == "/apple/mobileconfig":
		d, ok := domainOf(r.URL.Query().Get("emailaddress"))
		h.get(w, r, d, ok, h.mobileconfig)
	case path == "/autodiscover/autodiscover.xml":
		h.autodiscover(w, r)
	default:
		http.NotFound(w, r)
	}
}

// get checks the method and that domain is local, then lets serve answer.
func (h *Handler) get(w http.ResponseWriter, r *http.Request, domain string, ok bool,
	serve func(w http.ResponseWriter, r *http.Request, domain string)) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !ok {
		http.Error(w, "emailaddress must be an address of a local domain", http.StatusBadRequest)
		return
	}
	if err := h.local(r.Context(), domain); err != nil {
		h.notFound(w, r, domain, err)
		return
	}
	serve(w, r, domain)
}

// local returns nil when domain is one of the server's.
func (h *Handler) local(ctx context.Context, domain string) error {
	ds, err := h.Domains(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(ds, domain) {
		return errNotLocal
	}
	return nil
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request, domain string, err error) {
	if !errors.Is(err, errNotLocal) {
		h.Log.Error("autoconfig: listing domains", "err", err)
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	h.Log.Debug("autoconfig: unknown domain", "domain", domain, "path", r.URL.Path)
	http.NotFound(w, r)
}

// domainOf returns the lower-case domain of an address, and whether addr
// is one (local@domain, no spaces or angle brackets).
func domainOf(addr string) (string, bool) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || len(addr) > 254 || strings.ContainsAny(addr, " \t\r\n<>\"") {
		return "", false
	}
	return strings.ToLower(strings.TrimSuffix(addr[at+1:], ".")), true
}

func (h *Handler) mtaSTS(w http.ResponseWriter, r *http.Request, domain string) {
	// RFC 8461 3.2: text/plain; the mx is this server's name for every
	// local domain, as `agua domain dns` prints.
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(dnsrecords.Policy(h.Services.Host, h.MTASTS)))
}
