package operator

import (
	"strings"
	"testing"

	"github.com/agua-mail/agua/test/internal/harness"
)

// Item 7: agua bench -proto submission aimed at the MX port says what it
// reached instead of running and reporting 0% (auth: 502); aimed at the
// submission port it runs.
func TestBenchSaysWhatItReached(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.Start(t)
	srv.AddUser(t, "bench@bench.test", "bench-password-1")
	args := []string{"-proto", "submission", "-user", "bench@bench.test", "-pass", "bench-password-1",
		"-legit", "1", "-sessions", "1", "-duration", "20s", "-quiet", "-rcpt", "bench@bench.test"}
	out, err := srv.TryAgua("", "bench", append(args, "-target", srv.SMTP)...)
	if err == nil || !strings.Contains(out, "does not serve -proto submission") || !strings.Contains(out, "an SMTP server") ||
		!strings.Contains(out, "offers no AUTH") {
		t.Errorf("bench -proto submission against the MX port: %v\n%s", err, out)
	}
	out, err = srv.TryAgua("", "bench", append(args, "-target", srv.POP3)...)
	if err == nil || !strings.Contains(out, "a POP3 server") {
		t.Errorf("bench -proto submission against the POP3 port: %v\n%s", err, out)
	}
	out = srv.Agua(t, "", "bench", append(args, "-target", srv.Submission)...)
	if strings.Contains(out, "does not serve") {
		t.Errorf("bench against the submission port:\n%s", out)
	}
}
