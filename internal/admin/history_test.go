package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
)

func TestHistoryRoute(t *testing.T) {
	sh, err := shield.New(shield.DefaultConfig(), shield.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if err := sh.Ban(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "scanner", shield.Drop); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&Server{Shield: sh}).Handler())
	defer srv.Close()

	get := func(q string) (*http.Response, shield.HistorySnapshot) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/history?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var snap shield.HistorySnapshot
		json.NewDecoder(resp.Body).Decode(&snap)
		return resp, snap
	}
	resp, snap := get("since=1h&step=5m&offending=true")
	if resp.StatusCode != 200 || len(snap.Bans) != 1 || len(snap.Addrs) != 1 || snap.Step != 5*time.Minute || len(snap.Timeline) == 0 {
		t.Errorf("history: %d %+v", resp.StatusCode, snap)
	}
	if resp, _ := get("since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)); resp.StatusCode != 200 {
		t.Errorf("RFC 3339 since: %d", resp.StatusCode)
	}
	for _, q := range []string{"since=yesterday", "step=10s", "step=x"} {
		if resp, _ := get(q); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, resp.StatusCode)
		}
	}
}
