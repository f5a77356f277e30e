package router

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/greylist"
	"github.com/agua-mail/agua/internal/smtpd"
)

// countingGreylist defers every attempt and counts them.
type countingGreylist struct{ asked int }

func (c *countingGreylist) Check(netip.Addr, string, string, time.Time) greylist.Verdict {
	c.asked++
	return greylist.Verdict{Why: "new", Retry: time.Now().Add(time.Minute)}
}

// Only unauthenticated MX mail from a client neither allowlisted nor
// known-good is greylisted, and only for recipients that exist.
func TestGreylistWho(t *testing.T) {
	f := newFixture(t)
	g := &countingGreylist{}
	r, err := New(Config{Hostname: "mx.test", Accounts: f.dir, Local: NewLocal(f.store), Greylist: g})
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 30, 1), Port: 1}
	for _, tc := range []struct {
		name string
		s    smtpd.Session
		grey bool
	}{
		{"stranger", smtpd.Session{Mode: smtpd.ModeMX, RemoteAddr: addr}, true},
		{"authenticated on MX", smtpd.Session{Mode: smtpd.ModeMX, RemoteAddr: addr, User: "alice@example.test"}, false},
		{"allowlisted", smtpd.Session{Mode: smtpd.ModeMX, RemoteAddr: addr, Trusted: true}, false},
		{"known-good", smtpd.Session{Mode: smtpd.ModeMX, RemoteAddr: addr, KnownGood: true}, false},
		{"submission", smtpd.Session{Mode: smtpd.ModeSubmission, RemoteAddr: addr, User: "alice@example.test"}, false},
	} {
		before := g.asked
		errs, _ := send(t, r, &tc.s, "alice@example.test", "nobody@example.test", "bob@example.test")
		if !errors.Is(errs[0], smtpd.ErrUnknownRecipient) {
			t.Errorf("%s: unknown recipient: %v", tc.name, errs[0])
		}
		e := smtpd.AsError(errs[1])
		if tc.grey != (errs[1] != nil && e.Code == 451 && e.Enhanced == "4.7.1") || g.asked-before != map[bool]int{true: 1, false: 0}[tc.grey] {
			t.Errorf("%s: RCPT %v, greylist asked %d times", tc.name, errs[1], g.asked-before)
		}
	}
}
