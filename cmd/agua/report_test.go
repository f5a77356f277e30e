package main

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/server"
	"github.com/agua-mail/agua/shield"
)

// TestReportFromStoppedServer: with no server running, agua report reads
// the history the server saved in the data folder.
func TestReportFromStoppedServer(t *testing.T) {
	data := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = data
	s, err := shield.New(shield.DefaultConfig(), shield.Options{Logger: slog.New(slog.DiscardHandler), StateDir: server.ShieldStateDir(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ban(netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "scanner", shield.Drop); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	out := mustAgua(t, "", "report", "attack", "-data", data, "-since", "1h")
	if !strings.Contains(out, "by the operator:    1 (scanner 1)") {
		t.Errorf("attack report:\n%s", out)
	}
	// The block is saved in the network's reputation, which the report
	// lists among the worst.
	if !strings.Contains(out, "Worst reputation now (networks; score and its parts)\n  203.0.113.0/24       -5 (ban -5)\n") {
		t.Errorf("attack report lacks the network's reputation:\n%s", out)
	}
	var x []map[string]any
	out = mustAgua(t, "", "report", "abuse", "-format", "xarf", "-data", data)
	if err := json.Unmarshal([]byte(out), &x); err != nil || len(x) != 0 {
		t.Errorf("an operator's block is no abuse report: %v %s", err, out)
	}
	if code, _, errs := agua(t, "", "report", "abuse", "-format", "pdf", "-data", data); code != 2 || !strings.Contains(errs, "-format") {
		t.Errorf("bad format: exit %d %s", code, errs)
	}
	if code, _, errs := agua(t, "", "report", "abuse", "-resolver", "127.0.0.1", "-data", data); code != 2 || !strings.Contains(errs, "HOST:PORT") {
		t.Errorf("bad resolver: exit %d %s", code, errs)
	}
	if code, _, errs := agua(t, "", "report", "attack", "-data", t.TempDir()); code != 1 || !strings.Contains(errs, "not running") {
		t.Errorf("no data: exit %d %s", code, errs)
	}
}
