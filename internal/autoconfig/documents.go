package autoconfig

import (
	"crypto/sha256"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/agua-mail/agua/internal/dnsrecords"
)

// server is one offered service in the order clients should prefer it:
// implicit TLS before STARTTLS (RFC 8314 3), IMAP before POP3.
type server struct {
	kind string // imap, pop3, smtp
	svc  dnsrecords.Service
}

func (h *Handler) offered() (in, out []server) {
	s := h.Services
	for _, c := range []server{{"imap", s.IMAPS}, {"imap", s.IMAP}, {"pop3", s.POP3S}, {"pop3", s.POP3}} {
		if c.svc.Port != 0 {
			in = append(in, c)
		}
	}
	for _, c := range []server{{"smtp", s.Submissions}, {"smtp", s.Submission}} {
		if c.svc.Port != 0 {
			out = append(out, c)
		}
	}
	return in, out
}

// Thunderbird's clientConfig v1.1 (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
type clientConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID       string     `xml:"id,attr"`
		Domain   string     `xml:"domain"`
		Display  string     `xml:"displayName"`
		Short    string     `xml:"displayShortName"`
		Incoming []tbServer `xml:"incomingServer"`
		Outgoing []tbServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type tbServer struct {
	Type     string `xml:"type,attr"`
	Hostname string `xml:"hostname"`
	Port     int    `xml:"port"`
	Socket   string `xml:"socketType"`
	Username string `xml:"username"`
	Auth     string `xml:"authentication"`
}

func (h *Handler) thunderbird(w http.ResponseWriter, r *http.Request, domain string) {
	var c clientConfig
	c.Version = "1.1"
	c.Provider.ID, c.Provider.Domain, c.Provider.Display, c.Provider.Short = domain, domain, domain, domain
	in, out := h.offered()
	tb := func(s server) tbServer {
		sock := "STARTTLS"
		if s.svc.TLS {
			sock = "SSL"
		}
		// Users log in with their full address; the password travels
		// inside TLS only.
		return tbServer{Type: s.kind, Hostname: h.Services.Host, Port: s.svc.Port, Socket: sock,
			Username: "%EMAILADDRESS%", Auth: "password-cleartext"}
	}
	for _, s := range in {
		c.Provider.Incoming = append(c.Provider.Incoming, tb(s))
	}
	for _, s := range out {
		c.Provider.Outgoing = append(c.Provider.Outgoing, tb(s))
	}
	writeXML(w, "application/xml", c)
}

func writeXML(w http.ResponseWriter, contentType string, v any) {
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil { // only for types that cannot be encoded: a bug
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType+"; charset=utf-8")
	io.WriteString(w, xml.Header)
	w.Write(b)
	io.WriteString(w, "\n")
}

// The autodiscover request and response schemas ([MS-OXDSCLI] 2.2.4).
const (
	requestNS  = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
	responseNS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	outlookNS  = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

type adRequest struct {
	XMLName xml.Name `xml:"Autodiscover"`
	Request struct {
		EMailAddress             string
		AcceptableResponseSchema string
	}
}

type adResponse struct {
	XMLName  xml.Name `xml:"Autodiscover"`
	NS       string   `xml:"xmlns,attr"`
	Response struct {
		NS      string `xml:"xmlns,attr"`
		Account struct {
			AccountType string
			Action      string
			Protocol    []adProtocol
		}
	}
}

type adProtocol struct {
	Type           string
	Server         string
	Port           int
	LoginName      string
	DomainRequired string
	SPA            string
	SSL            string
	Encryption     string `xml:",omitempty"`
	AuthRequired   string
}

// autodiscover answers Outlook's POX request with the settings of the
// address it names.
func (h *Handler) autodiscover(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var req adRequest
	dec := xml.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err := dec.Decode(&req); err != nil || req.XMLName.Space != requestNS {
		http.Error(w, "expected an Outlook autodiscover request (POX)", http.StatusBadRequest)
		return
	}
	addr := strings.TrimSpace(req.Request.EMailAddress)
	domain, ok := domainOf(addr)
	if !ok {
		http.Error(w, "EMailAddress must be an address of a local domain", http.StatusBadRequest)
		return
	}
	if err := h.local(r.Context(), domain); err != nil {
		h.notFound(w, r, domain, err)
		return
	}
	var resp adResponse
	resp.NS, resp.Response.NS = responseNS, outlookNS
	resp.Response.Account.AccountType, resp.Response.Account.Action = "email", "settings"
	in, out := h.offered()
	for _, s := range append(in, out...) {
		p := adProtocol{Type: strings.ToUpper(s.kind), Server: h.Services.Host, Port: s.svc.Port,
			LoginName: addr, DomainRequired: "off", SPA: "off", SSL: "on", AuthRequired: "on"}
		if !s.svc.TLS {
			p.Encryption = "TLS" // STARTTLS; takes precedence over SSL
		}
		resp.Response.Account.Protocol = append(resp.Response.Account.Protocol, p)
	}
	writeXML(w, "application/xml", resp)
}

// mobileconfig is an unsigned Apple configuration profile with one mail
// account (the com.apple.mail.managed payload). Its UUIDs derive from the
// address, so downloading it again replaces the installed profile instead
// of adding a second one.
func (h *Handler) mobileconfig(w http.ResponseWriter, r *http.Request, domain string) {
	addr := strings.TrimSpace(r.URL.Query().Get("emailaddress"))
	in, out := h.offered()
	if len(in) == 0 || len(out) == 0 {
		http.Error(w, "no IMAP/POP3 or submission service is offered", http.StatusNotFound)
		return
	}
	inc, outg := in[0], out[0] // the preferred ones
	accType := "EmailTypeIMAP"
	if inc.kind == "pop3" {
		accType = "EmailTypePOP"
	}
	var b strings.Builder
	b.WriteString(xml.Header)
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString(`<plist version="1.0">` + "\n<dict>\n")
	id := "mail." + reverse(domain) + "." + uuid(addr, "account")
	str := func(k, v string) { b.WriteString("<key>" + k + "</key><string>" + escape(v) + "</string>\n") }
	num := func(k string, v int) {
		b.WriteString("<key>" + k + "</key><integer>" + strconv.Itoa(v) + "</integer>\n")
	}
	boolean := func(k string, v bool) { b.WriteString("<key>" + k + "</key><" + strconv.FormatBool(v) + "/>\n") }
	b.WriteString("<key>PayloadContent</key>\n<array>\n<dict>\n")
	str("EmailAccountDescription", addr)
	str("EmailAccountName", addr)
	str("EmailAccountType", accType)
	str("EmailAddress", addr)
	str("IncomingMailServerAuthentication", "EmailAuthPassword")
	str("IncomingMailServerHostName", h.Services.Host)
	num("IncomingMailServerPortNumber", inc.svc.Port)
	// UseSSL false still lets iOS and macOS upgrade with STARTTLS.
	boolean("IncomingMailServerUseSSL", inc.svc.TLS)
	str("IncomingMailServerUsername", addr)
	str("OutgoingMailServerAuthentication", "EmailAuthPassword")
	str("OutgoingMailServerHostName", h.Services.Host)
	num("OutgoingMailServerPortNumber", outg.svc.Port)
	boolean("OutgoingMailServerUseSSL", outg.svc.TLS)
	str("OutgoingMailServerUsername", addr)
	boolean("OutgoingPasswordSameAsIncomingPassword", true)
	str("PayloadDescription", "Mail account "+addr)
	str("PayloadDisplayName", addr)
	str("PayloadIdentifier", id+".payload")
	str("PayloadType", "com.apple.mail.managed")
	str("PayloadUUID", uuid(addr, "payload"))
	num("PayloadVersion", 1)
	b.WriteString("</dict>\n</array>\n")
	str("PayloadDescription", "Mail settings for "+addr)
	str("PayloadDisplayName", "Mail: "+addr)
	str("PayloadIdentifier", id)
	boolean("PayloadRemovalDisallowed", false)
	str("PayloadType", "Configuration")
	str("PayloadUUID", uuid(addr, "profile"))
	num("PayloadVersion", 1)
	b.WriteString("</dict>\n</plist>\n")
	w.Header().Set("Content-Type", "application/x-apple-aspen-config")
	w.Header().Set("Content-Disposition", `attachment; filename="`+domain+`.mobileconfig"`)
	io.WriteString(w, b.String())
}

func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// reverse turns example.org into org.example (profile identifiers are
// reverse-DNS).
func reverse(domain string) string {
	parts := strings.Split(domain, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

// uuid is a name-based UUID (RFC 9562 5.8, version 8 from SHA-256) of the
// lower-case address and what it identifies.
func uuid(addr, what string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(addr) + "\x00" + what))
	sum[6] = sum[6]&0x0f | 0x80
	sum[8] = sum[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}
