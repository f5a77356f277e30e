package report

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// maxNetworkEvidence bounds the evidence lines in one email.
const maxNetworkEvidence = 20

func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// abuseTags are the tags of what makes the address worth an abuse report
// (CSV, XARF): refusals count only when a ban for its abuse refused it.
func (o *Offender) abuseTags() []string {
	t := o.tags()
	if o.Refused > 0 {
		t = t[:len(t)-1]
	}
	if o.Banned > 0 {
		t = append(t, "returned_while_banned")
	}
	return t
}

// tags are short names of what an offender did (attack report).
func (o *Offender) tags() []string {
	var out []string
	if o.Spread == "auth_failure" {
		out = append(out, "distributed_brute_force")
	}
	if o.Auth > 0 {
		out = append(out, "brute_force")
	}
	if o.Unknown > 0 {
		out = append(out, "harvesting")
	}
	if o.Flood {
		out = append(out, "flood")
	}
	if o.Protocol > 0 {
		out = append(out, "protocol_errors")
	}
	if o.Pregreet > 0 {
		out = append(out, "pregreet")
	}
	if o.Refused > 0 {
		out = append(out, "refused_connections")
	}
	return out
}

func addrString(o *Offender) string {
	if o.Addr.IsSingleIP() {
		return o.Addr.Addr().String()
	}
	return o.Addr.String()
}

// WriteText writes one plain-text email per abuse contact, ready to send,
// separated by a line of '='.
func (r *AbuseReport) WriteText(w io.Writer) error {
	if len(r.Contacts) == 0 {
		_, err := fmt.Fprintf(w, "No abuse to report since %s.\n", utc(r.Since))
		return err
	}
	for i, c := range r.Contacts {
		if i > 0 {
			fmt.Fprintf(w, "\n%s\n\n", strings.Repeat("=", 72))
		}
		if err := r.writeEmail(w, c); err != nil {
			return err
		}
	}
	return nil
}

// plural writes n and the noun in the right number.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func (r *AbuseReport) writeEmail(w io.Writer, c *Contact) error {
	to := "the abuse contact of " + c.Prefix.String() + " (whois " + c.Prefix.Addr().String() + ")"
	from := c.Prefix.String()
	if c.Domain != "" {
		to = "abuse@" + c.Domain
		from = c.Domain
	}
	seen := map[string]bool{}
	var acts, netNames []string
	var offs []*Offender
	flood := false
	addrs, whole := 0, []string{}
	first, last := c.Networks[0].First(), c.Networks[0].Last()
	for _, n := range c.Networks {
		netNames = append(netNames, n.Prefix.String())
		first, last = minTime(first, n.First()), maxTime(last, n.Last())
		for _, o := range n.Offenders {
			offs = append(offs, o)
			if o.Addr.IsSingleIP() {
				addrs++
			} else {
				whole = append(whole, o.Addr.String())
			}
			flood = flood || o.Flood
			for _, a := range o.Activities() {
				if !seen[a] {
					seen[a] = true
					acts = append(acts, a)
				}
			}
		}
	}
	short := make([]string, len(acts))
	for i, a := range acts {
		short[i], _, _ = strings.Cut(a, " (")
	}
	fmt.Fprintf(w, "From: %s\n", r.Contact)
	fmt.Fprintf(w, "To: %s\n", to)
	fmt.Fprintf(w, "Subject: Abuse from %s against %s: %s\n", from, r.Hostname, strings.Join(short, ", "))
	fmt.Fprintf(w, "Date: %s\n\n", r.Now.Format(time.RFC1123Z))
	who := plural(addrs, "address", "addresses")
	if len(whole) > 0 {
		if addrs == 0 {
			who = "the " + plural(len(whole), "network", "networks")[2:]
		} else {
			who += " and the " + plural(len(whole), "network", "networks")[2:]
		}
		who += " " + strings.Join(whole, ", ") + " as a whole"
	}
	fmt.Fprintf(w, "Hello,\n\nthis is a report from the server %s.\n%s in %s of yours (%s)\n", r.Hostname, who,
		plural(len(c.Networks), "network", "networks"), strings.Join(netNames, ", "))
	fmt.Fprintf(w, "abused it between %s and %s (UTC):\n", utc(first), utc(last))
	for _, a := range acts {
		fmt.Fprintf(w, "  - %s\n", a)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "address\tfirst seen (UTC)\tlast seen (UTC)\tauth\tunknown\tproto\tpregreet"
	if flood {
		head += "\tmsgs\trcpts"
	}
	head += "\tbanned\tbans\treverse DNS"
	fmt.Fprintln(tw, head)
	for _, o := range offs {
		row := fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%d\t%d", addrString(o), utc(o.First), utc(o.Last), o.Auth, o.Unknown, o.Protocol, o.Pregreet)
		if flood {
			row += fmt.Sprintf("\t%d\t%d", o.Messages, o.Rcpts)
		}
		ptr := o.PTR
		if ptr == "" {
			ptr = "-"
		}
		row += fmt.Sprintf("\t%d\t%d\t%s", o.Banned, o.Bans, ptr)
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nauth: failed logins (brute force). unknown: recipients that do not exist\n(address harvesting). proto: protocol errors. pregreet: spoke before our\ngreeting.\n")
	if flood {
		fmt.Fprintf(w, "msgs, rcpts: messages and recipients sent in a flood.\n")
	}
	fmt.Fprintf(w, "banned: connections it made while banned for this behaviour (refused).\nbans: times we banned it.\n\n")
	fmt.Fprintf(w, "Evidence (aggregated log lines of %s, UTC):\n\n", r.Hostname)
	lines := 0
	for _, o := range offs {
		for _, l := range o.Evidence {
			if lines == maxNetworkEvidence {
				break
			}
			fmt.Fprintf(w, "  %s\n", l)
			lines++
		}
	}
	_, err := fmt.Fprintf(w, "\nPlease investigate these hosts and stop this traffic. Questions and\nanswers: %s\n\n-- \nagua on %s\n", r.Contact, r.Hostname)
	return err
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// WriteCSV writes one row per address.
func (r *AbuseReport) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"network", "address", "first_seen", "last_seen", "auth_failures", "unknown_recipients", "protocol_errors",
		"pregreet", "messages", "recipients", "refused_while_banned", "bans", "activities", "reverse_dns"})
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	for _, n := range r.Networks {
		for _, o := range n.Offenders {
			cw.Write([]string{n.Prefix.String(), addrString(o), utc(o.First), utc(o.Last), u(o.Auth), u(o.Unknown), u(o.Protocol),
				u(o.Pregreet), u(o.Messages), u(o.Rcpts), u(o.Banned), strconv.Itoa(o.Bans), strings.Join(o.abuseTags(), ";"), o.PTR})
		}
	}
	cw.Flush()
	return cw.Error()
}

// xarfReport is an XARF v4 report (xarf-core.json of xarf/xarf-spec
// 4.0.0 with the connection type schemas). source_port is required by the
// connection types when the source is an IP address, but the shield counts
// per address, not per connection, so it is left out rather than made up.
type xarfReport struct {
	Version          string            `json:"xarf_version"`
	ReportID         string            `json:"report_id"`
	Timestamp        string            `json:"timestamp"`
	Reporter         xarfParty         `json:"reporter"`
	Sender           xarfParty         `json:"sender"`
	SourceIdentifier string            `json:"source_identifier"`
	Class            string            `json:"class"`
	Type             string            `json:"type"`
	Protocol         string            `json:"protocol"`
	FirstSeen        string            `json:"first_seen"`
	LastSeen         string            `json:"last_seen"`
	AttackVector     string            `json:"attack_vector,omitempty"`
	ProbedResources  []string          `json:"probed_resources,omitempty"`
	EvidenceSource   string            `json:"evidence_source"`
	Description      string            `json:"description"`
	Tags             []string          `json:"tags,omitempty"`
	Evidence         []xarfEvidence    `json:"evidence,omitempty"`
	Counts           map[string]uint64 `json:"x_agua_counts"`
}

type xarfParty struct {
	Org     string `json:"org"`
	Contact string `json:"contact"`
	Type    string `json:"type,omitempty"`
	Domain  string `json:"domain,omitempty"`
}

type xarfEvidence struct {
	ContentType string `json:"content_type"`
	Description string `json:"description"`
	Payload     string `json:"payload"`
	Hash        string `json:"hash"`
	Size        int    `json:"size"`
}

// reportID is a UUID (version 4 layout) derived from the report's content,
// so the same report always has the same id.
func reportID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// WriteXARF writes a JSON array with one XARF v4 report per address.
func (r *AbuseReport) WriteXARF(w io.Writer) error {
	out := []xarfReport{}
	for _, n := range r.Networks {
		for _, o := range n.Offenders {
			out = append(out, r.xarf(o))
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func (r *AbuseReport) xarf(o *Offender) xarfReport {
	party := xarfParty{Org: r.Hostname, Contact: r.Contact, Domain: r.Hostname}
	x := xarfReport{
		Version:          "4.0.0",
		ReportID:         reportID(r.Hostname, o.Addr.String(), utc(o.First), utc(o.Last)),
		Timestamp:        utc(o.First),
		Reporter:         xarfParty{Org: r.Hostname, Contact: r.Contact, Type: "automated"},
		Sender:           party,
		SourceIdentifier: addrString(o),
		Class:            "connection",
		Protocol:         "tcp",
		FirstSeen:        utc(o.First),
		LastSeen:         utc(o.Last),
		EvidenceSource:   "firewall_logs", // the shield refuses and counts like a firewall
		Description:      fmt.Sprintf("%s: %s", addrString(o), strings.Join(o.Activities(), ", ")),
		Counts: map[string]uint64{"auth_failures": o.Auth, "unknown_recipients": o.Unknown, "protocol_errors": o.Protocol,
			"pregreet": o.Pregreet, "messages": o.Messages, "recipients": o.Rcpts, "refused_while_banned": o.Banned, "bans": uint64(o.Bans)},
	}
	switch {
	case o.Auth > 0 || o.Spread == "auth_failure":
		x.Type = "login_attack"
	case o.Unknown > 0 || o.Protocol > 0 || o.Pregreet > 0:
		// Probing the service: which mailboxes exist (harvesting), how it
		// answers garbage, whether it minds a client that does not wait.
		x.Type = "reconnaissance"
		if o.Unknown > 0 {
			x.ProbedResources = append(x.ProbedResources, "mailbox addresses (recipients that do not exist)")
		}
		if o.Protocol > 0 {
			x.ProbedResources = append(x.ProbedResources, "the service's protocol (malformed or out-of-order commands)")
		}
		if o.Pregreet > 0 {
			x.ProbedResources = append(x.ProbedResources, "the service's greeting (spoke before it)")
		}
	default:
		x.Type = "ddos"
		x.AttackVector = "connection_flood"
		if o.Flood {
			x.AttackVector = "message_flood"
		}
	}
	for _, t := range o.abuseTags() {
		x.Tags = append(x.Tags, "behaviour:"+t)
	}
	if len(o.Evidence) > 0 {
		payload := strings.Join(o.Evidence, "\n") + "\n"
		sum := sha256.Sum256([]byte(payload))
		x.Evidence = []xarfEvidence{{ContentType: "text/plain", Description: "aggregated log lines of " + r.Hostname + " (UTC)",
			Payload: base64.StdEncoding.EncodeToString([]byte(payload)), Hash: fmt.Sprintf("sha256:%x", sum), Size: len(payload)}}
	}
	return x
}
