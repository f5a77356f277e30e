// Package mailevents defines the behaviours agua's mail servers report to
// the shield: unknown recipients (address harvesting), talking before the
// greeting (RFC 5321 4.3.1: the client waits for the 220 banner; Postfix
// postscreen's pregreet test), and accepted messages and recipients (a flood
// of otherwise good mail). The shield itself knows nothing about mail; it
// defines only auth_failure, auth_success and protocol_error, which any
// service has (shield.AuthFailure, shield.AuthSuccess, shield.ProtocolError).
//
// The behaviours register when this package is initialised, so importing it
// (internal/config does) is what makes their thresholds part of the
// configuration: [shield.thresholds.unknown_recipient], pregreet, message,
// recipient, network_message, dmarc_fail, network_dmarc_fail and
// outbound_abuse, and their reputation weights
// ([shield.reputation.weights], with spf_pass, spf_fail and dmarc_pass).
package mailevents

import (
	"time"

	"github.com/agua-mail/agua/shield"
)

var (
	// UnknownRecipient is an RCPT TO a user that does not exist
	// (RFC 5321 3.6.2: 550 5.1.1); many of them are address harvesting.
	UnknownRecipient = shield.MustRegister(shield.Behaviour{
		Name:       "unknown_recipient",
		Doc:        "recipients that do not exist (address harvesting)",
		Threshold:  shield.Threshold{Count: 20, Window: 10 * time.Minute},
		Reason:     "banned for too many unknown recipients",
		Reputation: -1,
	})

	// PreGreet is a client that spoke before the greeting: RFC 5321 4.3.1
	// has the client wait for the 220 banner; spambots often do not.
	PreGreet = shield.MustRegister(shield.Behaviour{
		Name:       "pregreet",
		Doc:        "client spoke before the greeting",
		Threshold:  shield.Threshold{Count: 1, Window: time.Minute},
		Reason:     "banned for talking before the greeting",
		Reputation: -2,
	})

	// MessageAccepted is one message accepted for delivery. It marks the
	// address known-good and raises its reputation (mail its users kept);
	// too many from one address, or from one network (network_message, a
	// flood spread over a botnet), are a temporary refusal.
	MessageAccepted = shield.MustRegister(shield.Behaviour{
		Name:          "message",
		Doc:           "accepted messages (flood); the ban is a temporary refusal",
		Threshold:     shield.Threshold{Count: 500, Window: time.Minute},
		Network:       shield.Threshold{Count: 3000, Window: time.Minute},
		Reason:        "too many messages, slow down",
		NetworkReason: "too many messages from your network, slow down",
		Temporary:     true,
		KnownGood:     true,
		Benign:        true,
		Reputation:    1,
	})

	// OutboundAbuse is an authenticated submission over a sending limit,
	// or from an account whose sending is suspended (internal/sendlimit):
	// what a compromised account's client does. The ban is on the client's
	// address; the account itself is suspended by the sending limits.
	OutboundAbuse = shield.MustRegister(shield.Behaviour{
		Name:       "outbound_abuse",
		Doc:        "submissions over a sending limit or from a suspended account (a compromised account)",
		Threshold:  shield.Threshold{Count: 100, Window: time.Hour},
		Reason:     "banned for exceeding sending limits",
		Reputation: -2,
	})

	// RecipientAccepted is one recipient accepted (flood threshold).
	RecipientAccepted = shield.MustRegister(shield.Behaviour{
		Name:      "recipient",
		Doc:       "accepted recipients (flood); the ban is a temporary refusal",
		Threshold: shield.Threshold{Count: 2000, Window: time.Minute},
		Reason:    "too many recipients, slow down",
		Temporary: true,
		Benign:    true,
	})

	// DMARCFail is a message whose From domain publishes an enforcing
	// DMARC policy (p=quarantine or p=reject, RFC 7489 6.3) and that has
	// no aligned SPF or DKIM pass: spoofing, or a badly broken forwarder.
	// The per-network threshold catches a spoofing campaign spread over a
	// network; p=none failures (mailing lists) are not counted.
	DMARCFail = shield.MustRegister(shield.Behaviour{
		Name:          "dmarc_fail",
		Doc:           "messages failing DMARC against a quarantine or reject policy (spoofed senders)",
		Threshold:     shield.Threshold{Count: 10, Window: time.Hour},
		Network:       shield.Threshold{Count: 30, Window: time.Hour},
		Reason:        "banned for sending mail that fails sender authentication (DMARC)",
		NetworkReason: "your network sent too much mail that fails sender authentication (DMARC)",
		Reputation:    -3,
	})

	// SPFPass, SPFFail and DMARCPass are the sender authentication
	// results of a message the address sent (RFC 7208, RFC 7489): signals,
	// never counted or banned, that raise or lower its reputation. A
	// softfail, neutral or error result and a p=none DMARC failure
	// (mailing lists) say nothing; an enforcing DMARC failure is
	// dmarc_fail.
	SPFPass = shield.MustRegister(shield.Behaviour{
		Name: "spf_pass", Doc: "messages whose SPF result is pass: the client may send for the domain",
		Benign: true, Reputation: 0.5,
	})
	SPFFail = shield.MustRegister(shield.Behaviour{
		Name: "spf_fail", Doc: "messages whose SPF result is fail: the domain says this client may not send its mail",
		Reputation: -1,
	})
	DMARCPass = shield.MustRegister(shield.Behaviour{
		Name: "dmarc_pass", Doc: "messages passing DMARC (an aligned SPF or DKIM pass)",
		Benign: true, Reputation: 1,
	})

	// DNSAllowlisted is a client whose [dnsbl] score is at or below the
	// allowlist threshold (a DNSWL hit): a signal, never counted, that
	// marks the address known-good (reserved capacity, served under
	// lockdown).
	DNSAllowlisted = shield.MustRegister(shield.Behaviour{
		Name:      "dnswl",
		Doc:       "a client allowlisted by the [dnsbl] lists' score (a DNSWL hit); marks it known-good",
		KnownGood: true,
		Benign:    true,
	})
)

// AuthResults returns the signals of one message's SPF and DMARC results
// ("pass", "fail", ...), for the reputation of the client that sent it.
func AuthResults(spf, dmarc string) []shield.Event {
	var evs []shield.Event
	switch spf {
	case "pass":
		evs = append(evs, SPFPass)
	case "fail":
		evs = append(evs, SPFFail)
	}
	if dmarc == "pass" {
		evs = append(evs, DMARCPass)
	}
	return evs
}
