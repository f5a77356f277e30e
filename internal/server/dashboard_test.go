package server

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"

	"github.com/agua-mail/agua/internal/bench"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// chromium returns the browser's path, skipping the test when it is
// missing outside CI (under CI=true a missing browser is a failure).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (.ci/run installs it)")
	}
	t.Skip("SKIPPED: chromium is not installed; apt-get install chromium to run the dashboard test")
	return ""
}

// niceTicks reports whether "0,250,500,750,1000" is 0 and four equal steps
// of 1, 2 or 5 times a power of ten.
func niceTicks(s string) bool {
	f := strings.Split(s, ",")
	if len(f) != 5 || f[0] != "0" {
		return false
	}
	step, err := strconv.Atoi(f[1])
	if err != nil || step <= 0 {
		return false
	}
	for i, v := range f {
		if n, err := strconv.Atoi(v); err != nil || n != i*step {
			return false
		}
	}
	for step%10 == 0 {
		step /= 10
	}
	return step == 1 || step == 2 || step == 5
}

// closeBrowser closes the browser, waits for its process to exit, then
// removes its profile. Chromium's helper processes (crash handler, utility
// processes) can outlive the browser by a moment and write to the profile
// again after a first removal succeeded, which made t.TempDir's own cleanup
// fail with "directory not empty". So the profile is not a t.TempDir: it is
// removed here until it stays gone, within a bound, and a profile that a
// stray helper keeps writing is reported in the log, not as a failure of
// the dashboard.
func closeBrowser(t *testing.T, ctx context.Context, cancelAlloc context.CancelFunc, profile string) {
	chromedp.Cancel(ctx) // closes the browser and waits for it
	cancelAlloc()
	if c := chromedp.FromContext(ctx); c != nil && c.Allocator != nil {
		c.Allocator.Wait() // the process has exited
	}
	deadline := time.Now().Add(30 * time.Second)
	gone := 0 // consecutive checks that found the profile removed
	for gone < 5 {
		if err := os.RemoveAll(profile); err != nil {
			gone = 0
		} else if _, err := os.Stat(profile); errors.Is(err, fs.ErrNotExist) {
			gone++
		}
		if time.Now().After(deadline) {
			t.Logf("browser profile %s still written to after the browser exited; left behind", profile)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// signIn starts headless Chromium on the dashboard of ts, checks that a
// wrong token is refused, signs in with the right one and returns the
// browser's context (bounded; the browser closes with the test).
func signIn(t *testing.T, ts *testServer) context.Context {
	browser := chromium(t)
	tok, err := os.ReadFile(AdminTokenFile(ts.cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	profile, err := os.MkdirTemp("", "agua-dashboard-profile-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-crash-reporter", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 1100),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	// The pinned chromedp's protocol types lag the browser: it cannot decode
	// a few new event fields and says so on every event. Those events are not
	// used here, so its error log is dropped (test failures still show).
	bctx, _ := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...any) {}))
	// Chromium writes its profile until it (and its helpers) have exited.
	t.Cleanup(func() { closeBrowser(t, bctx, cancelA, profile) })
	// The first Run starts the browser and ties it to its context: bctx,
	// which closeBrowser closes, not the bounded context below (its end
	// would kill the browser under chromedp.Cancel, which then waits on
	// it forever).
	if err := chromedp.Run(bctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancelT := context.WithTimeout(bctx, 90*time.Second)
	t.Cleanup(cancelT)

	url := "http://" + ts.srv.Addr("admin") + "/"
	if err := chromedp.Run(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible("#token", chromedp.ByQuery),
		chromedp.SendKeys("#token", "wrong-token", chromedp.ByQuery),
		chromedp.Click("#login-btn", chromedp.ByQuery),
		chromedp.WaitVisible("#login-error", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	var loginErr string
	chromedp.Run(ctx, chromedp.Sleep(500*time.Millisecond), chromedp.Text("#login-error", &loginErr, chromedp.ByQuery))
	if !strings.Contains(loginErr, "refused") {
		t.Errorf("wrong token: login error %q", loginErr)
	}
	if err := chromedp.Run(ctx,
		chromedp.SetValue("#token", strings.TrimSpace(string(tok)), chromedp.ByQuery),
		chromedp.Click("#login-btn", chromedp.ByQuery),
		chromedp.WaitVisible("#app", chromedp.ByQuery),
		chromedp.WaitVisible(`#listeners tr[data-listener="smtp"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// TestDashboardEndToEnd drives the dashboard in real headless Chromium:
// sign in with the token, watch a live slowloris from agua bench appear
// among the top addresses, block that address from the page and see its
// connections refused.
func TestDashboardEndToEnd(t *testing.T) {
	// A short log interval folds refusals into the history quickly, so
	// the "Recent events" table fills within the test.
	// far.test's mail exchanger is an address where nothing listens, so
	// the queue panel's message stays queued (connection refused: deferred).
	dns := dnstest.Start(t, "127.0.0.96")
	dns.Add(t, "far.test. 300 IN MX 10 mx.far.test.", "mx.far.test. 300 IN A 127.0.0.97")
	ts := startServer(t, func(c *config.Config) {
		c.Shield.LogInterval = 300 * time.Millisecond
		c.DNS.Resolver = []string{dns.Addr}
		c.Outbound.SMTPPort = freePort(t, "127.0.0.97")
	})
	ctx := signIn(t, ts)

	// A slowloris from one address, held open by agua bench.
	attacker := netip.MustParseAddr("127.0.0.200")
	bctx, stopAttack := context.WithCancel(context.Background())
	defer stopAttack()
	go bench.Run(bctx, bench.Config{
		Target: ts.srv.Addr("smtp"), Duration: time.Minute,
		Attacks: []string{"slowloris"}, AttackSrc: netip.PrefixFrom(attacker, 32), AttackConns: 8,
	})
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible(`#top-addrs tr[data-prefix="127.0.0.200/32"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("the attacker never showed among the top addresses: %v", err)
	}

	if err := chromedp.Run(ctx,
		chromedp.SetValue("#block-cidr", "127.0.0.200", chromedp.ByQuery),
		chromedp.SetValue("#block-action", "reject", chromedp.ByQuery),
		chromedp.Click("#block-btn", chromedp.ByQuery),
		chromedp.WaitVisible(`#bans tr[data-prefix="127.0.0.200/32"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("block from the page: %v", err)
	}
	// The block lowers the address's reputation: the page lists it among
	// the worst scores with its ban part, and its network too.
	var repParts string
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible(`#worst-addrs tr[data-prefix="127.0.0.200/32"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#worst-nets tr[data-prefix="127.0.0.0/24"]`, chromedp.ByQuery),
		chromedp.Text(`#worst-addrs tr[data-prefix="127.0.0.200/32"] td:nth-child(3)`, &repParts, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("the blocked address never showed among the worst reputations: %v", err)
	}
	if !strings.Contains(repParts, "ban -5") {
		t.Errorf("reputation parts of the blocked address: %q, want the ban's -5", repParts)
	}
	// The refusals of the blocked attacker reach the aggregated history.
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible(`#events tr[data-prefix="127.0.0.200/32"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("the blocked attacker never showed among the recent events: %v", err)
	}
	// Times are UTC, 24-hour, as in the logs and the CLI; the chart's y axis
	// has round ticks; the browser's own address (127.0.0.1, allowlisted)
	// is listed without a Block button, which could only fail.
	var expires, lastSeen, ticks string
	var blockButtons []*cdp.Node
	if err := chromedp.Run(ctx,
		chromedp.Text(`#bans tr[data-prefix="127.0.0.200/32"] td:nth-child(6)`, &expires, chromedp.ByQuery),
		chromedp.Text(`#events tr[data-prefix="127.0.0.200/32"] td:nth-child(2)`, &lastSeen, chromedp.ByQuery),
		chromedp.AttributeValue("#chart", "data-ticks", &ticks, nil, chromedp.ByQuery),
		chromedp.WaitVisible(`#top-addrs tr[data-prefix="127.0.0.1/32"]`, chromedp.ByQuery),
		chromedp.Nodes(`#top-addrs tr[data-prefix="127.0.0.1/32"] button`, &blockButtons, chromedp.ByQueryAll, chromedp.AtLeast(0)),
	); err != nil {
		t.Fatalf("reading times, ticks and the allowlisted talker: %v", err)
	}
	utcTime := regexp.MustCompile(`^\d\d:\d\d:\d\d UTC`)
	if !utcTime.MatchString(expires) || !utcTime.MatchString(lastSeen) {
		t.Errorf("times not in 24-hour UTC: expires %q, last seen %q", expires, lastSeen)
	}
	if !niceTicks(ticks) {
		t.Errorf("y-axis ticks %q are not round (0 and 4 equal steps of 1, 2 or 5 times a power of ten)", ticks)
	}
	if len(blockButtons) != 0 {
		t.Errorf("the allowlisted 127.0.0.1 has a Block button")
	}
	if dir := os.Getenv("AGUA_SCREENSHOT_DIR"); dir != "" {
		var png []byte
		chromedp.Run(ctx, chromedp.Sleep(2*time.Second), chromedp.FullScreenshot(&png, 100))
		os.WriteFile(filepath.Join(dir, "dashboard.png"), png, 0o644)
	}
	stopAttack()

	// The blocked address is refused now; another is still served.
	c := dialFrom(t, ts.srv.Addr("smtp"), "127.0.0.200")
	c.expect("554 5.7.1")
	ok := dialFrom(t, ts.srv.Addr("smtp"), "127.0.0.201")
	ok.expect("220 ")

	// Unblock from the page.
	if err := chromedp.Run(ctx,
		chromedp.Click(`#bans tr[data-prefix="127.0.0.200/32"] button.unblock`, chromedp.ByQuery),
		chromedp.WaitNotPresent(`#bans tr[data-prefix="127.0.0.200/32"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("unblock from the page: %v", err)
	}
	conn, err := net.DialTimeout("tcp", ts.srv.Addr("smtp"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if bans := ts.srv.Shield().Bans(); len(bans) != 0 {
		t.Fatalf("bans after unblock: %+v", bans)
	}

	// The queue panel: a message of alice's waits for far.test; her
	// sending is suspended, which holds it; the panel lists her with the
	// held message and a Release button, which resumes her sending and
	// releases the message.
	if _, err := ts.srv.out.queue.Enqueue(t.Context(), queue.Envelope{From: testUser, To: []string{"x@far.test"}, Account: testUser, Received: time.Now()},
		strings.NewReader("Subject: waiting\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.srv.suspend(t.Context(), testUser, "dashboard test"); err != nil {
		t.Fatal(err)
	}
	var held, doms, heldCell string
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible(`#suspended tr[data-account="alice@example.test"] button.release`, chromedp.ByQuery),
		chromedp.WaitVisible(`#queue-domains tr[data-domain="far.test"]`, chromedp.ByQuery),
		chromedp.AttributeValue("#queue-panel", "data-held", &held, nil, chromedp.ByQuery),
		chromedp.Text("#queue-domains tbody", &doms, chromedp.ByQuery),
		chromedp.Text(`#suspended tr[data-account="alice@example.test"] td:nth-child(4)`, &heldCell, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("queue panel: %v", err)
	}
	if held != "1" || heldCell != "1" || !strings.Contains(doms, "far.test") {
		t.Errorf("queue panel: held %q, alice's held %q, destinations %q", held, heldCell, doms)
	}
	if err := chromedp.Run(ctx,
		chromedp.Click(`#suspended tr[data-account="alice@example.test"] button.release`, chromedp.ByQuery),
		chromedp.WaitNotPresent(`#suspended tr[data-account="alice@example.test"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("release from the page: %v", err)
	}
	if ts.srv.limits.IsSuspended(testUser) {
		t.Fatal("still suspended after Release")
	}
	if st := ts.srv.out.queue.Stats(); st.Held != 0 {
		t.Fatalf("held messages after Release: %+v", st)
	}
}
