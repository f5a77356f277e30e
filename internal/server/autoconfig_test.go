package server

import (
	"context"
	"encoding/xml"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// curlGet fetches url over the autoconfig listener with curl from a
// non-allowlisted loopback address, every name resolving to the listener.
// It returns the status, the content type and the body.
func curlGet(t *testing.T, ts *testServer, url string, extra ...string) (int, string, string) {
	t.Helper()
	const sep = "\n--agua-curl--"
	host, port, _ := net.SplitHostPort(ts.srv.Addr("autoconfig"))
	name := strings.SplitN(strings.TrimPrefix(url, "https://"), "/", 2)[0]
	name, _, _ = strings.Cut(name, ":")
	args := append([]string{"-sS", "-k", "--max-time", "20", "--interface", "127.0.61.1",
		"--resolve", name + ":" + port + ":" + host, "-w", sep + "%{http_code} %{content_type}"}, extra...)
	out, err := exec.Command("curl", append(args, strings.Replace(url, name, name+":"+port, 1))...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", url, err, out)
	}
	body, tail, ok := strings.Cut(string(out), sep)
	if !ok {
		t.Fatalf("curl output %q", out)
	}
	codeStr, ctype, _ := strings.Cut(tail, " ")
	code, _ := strconv.Atoi(codeStr)
	return code, ctype, body
}

type tbConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Provider struct {
		Domain   string `xml:"domain"`
		Incoming []struct {
			Type     string `xml:"type,attr"`
			Hostname string `xml:"hostname"`
			Port     string `xml:"port"`
			Socket   string `xml:"socketType"`
			Username string `xml:"username"`
		} `xml:"incomingServer"`
		Outgoing []struct {
			Type   string `xml:"type,attr"`
			Port   string `xml:"port"`
			Socket string `xml:"socketType"`
		} `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type adResp struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response struct {
		XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Account struct {
			AccountType string
			Action      string
			Protocol    []struct {
				Type, Server, Port, LoginName, SSL, Encryption string
			}
		}
	}
}

// plistPairs reads a property list into its key/value pairs in order
// (nested dictionaries flattened), enough to check a profile.
func plistPairs(t *testing.T, body string) [][2]string {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(body))
	dec.Strict = true
	var pairs [][2]string
	var key, text string
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			text = ""
			_ = tk
		case xml.CharData:
			text += string(tk)
		case xml.EndElement:
			switch tk.Name.Local {
			case "key":
				key = text
			case "string", "integer", "true", "false":
				v := text
				if tk.Name.Local == "true" || tk.Name.Local == "false" {
					v = tk.Name.Local
				}
				pairs = append(pairs, [2]string{key, v})
			}
		}
	}
	if len(pairs) == 0 {
		t.Fatalf("no plist entries in %q", body)
	}
	return pairs
}

func lookup(pairs [][2]string, key string) []string {
	var out []string
	for _, p := range pairs {
		if p[0] == key {
			out = append(out, p[1])
		}
	}
	return out
}

// TestAutoconfigOverHTTPS fetches every document with curl for two local
// domains and parses it, and checks that other domains get 404.
func TestAutoconfigOverHTTPS(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Hostname = "mail.example.net"
		c.Autoconfig.Listen = "127.0.0.1:0"
		c.Autoconfig.TLS = true
		c.POP3.Listen = nil // POP3 with STLS not offered
	})
	if err := ts.dir.AddDomain(context.Background(), "second.example"); err != nil {
		t.Fatal(err)
	}
	imaps, imap, subs := portOf(ts.srv.Addr("imaps")), portOf(ts.srv.Addr("imap")), portOf(ts.srv.Addr("submissions"))

	for _, domain := range []string{"example.test", "second.example"} {
		addr := "Bob@" + domain
		for _, url := range []string{
			"https://autoconfig." + domain + "/mail/config-v1.1.xml?emailaddress=" + addr,
			"https://autoconfig." + domain + "/mail/config-v1.1.xml",
			"https://" + domain + "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=" + addr,
		} {
			code, ctype, body := curlGet(t, ts, url)
			var c tbConfig
			if err := xml.Unmarshal([]byte(body), &c); code != 200 || err != nil {
				t.Fatalf("%s: %d %v\n%s", url, code, err, body)
			}
			in := c.Provider.Incoming
			if !strings.HasPrefix(ctype, "application/xml") || c.Provider.Domain != domain || len(in) != 3 ||
				in[0].Type != "imap" || in[0].Port != imaps || in[0].Socket != "SSL" || in[0].Hostname != "mail.example.net" ||
				in[0].Username != "%EMAILADDRESS%" || in[1].Port != imap || in[1].Socket != "STARTTLS" || in[2].Type != "pop3" ||
				len(c.Provider.Outgoing) != 2 || c.Provider.Outgoing[0].Port != subs || c.Provider.Outgoing[0].Socket != "SSL" {
				t.Errorf("%s: %s\n%+v\n%s", url, ctype, c, body)
			}
		}

		req := `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request><EMailAddress>` + addr + `</EMailAddress>
  <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>
</Autodiscover>`
		code, _, body := curlGet(t, ts, "https://autodiscover."+domain+"/autodiscover/autodiscover.xml",
			"-H", "Content-Type: text/xml", "--data-binary", req)
		var r adResp
		if err := xml.Unmarshal([]byte(body), &r); code != 200 || err != nil {
			t.Fatalf("autodiscover %s: %d %v\n%s", domain, code, err, body)
		}
		ps := r.Response.Account.Protocol
		if r.Response.Account.Action != "settings" || len(ps) != 5 || ps[0].Type != "IMAP" || ps[0].Port != imaps ||
			ps[0].SSL != "on" || ps[0].Encryption != "" || ps[0].LoginName != addr || ps[0].Server != "mail.example.net" ||
			ps[1].Encryption != "TLS" || ps[3].Type != "SMTP" || ps[3].Port != subs {
			t.Errorf("autodiscover %s: %+v\n%s", domain, r, body)
		}

		code, ctype, body := curlGet(t, ts, "https://"+domain+"/apple/mobileconfig?emailaddress="+addr)
		if code != 200 || ctype != "application/x-apple-aspen-config" {
			t.Fatalf("mobileconfig %s: %d %q\n%s", domain, code, ctype, body)
		}
		pl := plistPairs(t, body)
		if got := lookup(pl, "PayloadType"); len(got) != 2 || got[0] != "com.apple.mail.managed" || got[1] != "Configuration" ||
			lookup(pl, "IncomingMailServerPortNumber")[0] != imaps || lookup(pl, "EmailAddress")[0] != addr ||
			lookup(pl, "IncomingMailServerUseSSL")[0] != "true" || lookup(pl, "OutgoingMailServerPortNumber")[0] != subs ||
			lookup(pl, "IncomingMailServerHostName")[0] != "mail.example.net" {
			t.Errorf("mobileconfig %s: %v", domain, pl)
		}

		code, ctype, body = curlGet(t, ts, "https://mta-sts."+domain+"/.well-known/mta-sts.txt")
		if code != 200 || ctype != "text/plain" ||
			body != "version: STSv1\r\nmode: testing\r\nmx: mail.example.net\r\nmax_age: 604800\r\n" {
			t.Errorf("mta-sts %s: %d %q %q", domain, code, ctype, body)
		}
	}

	for _, c := range []struct {
		url   string
		extra []string
		code  int
	}{
		{"https://autoconfig.unknown.example/mail/config-v1.1.xml?emailaddress=a@unknown.example", nil, 404},
		{"https://autoconfig.example.test/mail/config-v1.1.xml?emailaddress=a@unknown.example", nil, 404},
		{"https://mta-sts.unknown.example/.well-known/mta-sts.txt", nil, 404},
		{"https://example.test/.well-known/mta-sts.txt", nil, 404}, // only at mta-sts.DOMAIN
		{"https://example.test/apple/mobileconfig?emailaddress=a@unknown.example", nil, 404},
		{"https://example.test/apple/mobileconfig?emailaddress=not-an-address", nil, 400},
		{"https://example.test/apple/mobileconfig", nil, 400},
		{"https://example.test/autodiscover/autodiscover.xml", nil, 405},
		{"https://example.test/autodiscover/autodiscover.xml", []string{"--data-binary", "<Autodiscover><Request>"}, 400},
		{"https://example.test/autodiscover/autodiscover.xml", []string{"--data-binary",
			`<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>x@unknown.example</EMailAddress></Request></Autodiscover>`}, 404},
		{"https://example.test/mail/config-v1.1.xml?emailaddress=a@example.test", []string{"-X", "DELETE"}, 405},
		{"https://example.test/", nil, 404},
	} {
		if code, _, body := curlGet(t, ts, c.url, c.extra...); code != c.code {
			t.Errorf("%s %v: %d, want %d\n%s", c.url, c.extra, code, c.code, body)
		}
	}
}
