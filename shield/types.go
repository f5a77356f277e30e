package shield

import (
	"fmt"
	"strings"
)

// Action is what the shield does with a client it refuses.
type Action uint8

const (
	Allow  Action = iota // serve the client
	Reject               // answer with a short protocol-correct refusal, then close
	Drop                 // close at once, nothing written
	Tarpit               // hold the connection open silently, reading and discarding, until the tarpit hold time
)

var actionNames = [...]string{Allow: "allow", Reject: "reject", Drop: "drop", Tarpit: "tarpit"}

// String returns "allow", "reject", "drop" or "tarpit".
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// ParseAction parses "allow", "reject", "drop" or "tarpit" (case-insensitive).
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if strings.EqualFold(s, n) {
			return Action(i), nil
		}
	}
	return Allow, fmt.Errorf("unknown action %q (want allow, reject, drop or tarpit)", s)
}

// MarshalText makes Action readable in TOML and JSON.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText lets TOML and JSON decode "reject", "drop", "tarpit".
func (a *Action) UnmarshalText(b []byte) error {
	v, err := ParseAction(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Decision is the shield's verdict on a connection, a request or a reported
// event.
type Decision struct {
	Action    Action `json:"action"`
	Temporary bool   `json:"temporary"`         // refusal due to load, rate or capacity (4xx, 421, -ERR [SYS/TEMP], 429); false: policy (554, -ERR, BYE, 403)
	Reason    string `json:"reason,omitempty"`  // short client-safe text
	Source    string `json:"source,omitempty"`  // operator detail: "shield.rules:12", "config:rules[3]", "ban:auth_failure", "limit:per_ip_conns", "lockdown", "capacity"
	DryRun    bool   `json:"dry_run,omitempty"` // a dry-run rule or threshold matched: logged as "would block", Action stays Allow
}

// Denied reports whether the decision refuses the client.
func (d Decision) Denied() bool { return d.Action != Allow }

// Client-safe reasons. They never name a rule, a file or a counter.
const (
	reasonDenied       = "access denied"
	reasonPerIPConns   = "too many connections from your address"
	reasonPerPrefix    = "too many connections from your network"
	reasonRate         = "connection rate too high, slow down"
	reasonPrefixRate   = "connection rate from your network too high, slow down"
	reasonRequestRate  = "request rate too high, slow down"
	reasonCapacity     = "server busy, try again later"
	reasonLockdown     = "service restricted"
	reasonBannedManual = "access denied"
)

var allow = Decision{Action: Allow}
