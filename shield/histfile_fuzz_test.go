package shield

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzHistoryFile: whatever the history file holds, loading it neither
// panics nor breaks the bounds, and a snapshot can be taken.
func FuzzHistoryFile(f *testing.F) {
	f.Add([]byte(`{"k":"d","a":"192.0.2.7/32","m":29431264,"f":1765847045000000000,"l":1765847046000000000,"ad":3,"e":[0,4,0,0,0,0,0,0],"r":[{"s":"shield.rules:3","a":"drop","n":12}]}` + "\n"))
	f.Add([]byte(`{"k":"t","m":29431264,"ad":5,"ra":[0,2,3,0],"s":[{"s":"rule","n":5}],"bn":1}` + "\n" + `{"k":"B","b":{"time":"2026-01-02T03:04:05Z","kind":"ban","prefix":"192.0.2.0/24","reason":"scanner","action":"drop","ttl":600000000000,"count":1}}` + "\n"))
	f.Add([]byte(`{"k":"r","a":"2001:db8::1/128","m":-5,"e":[1,2,3,4,5,6,7,8,9,10],"r":[{"s":"x","a":"action(9)","n":1}]}` + "\n{\"k\":\"d\",\"a\""))
	f.Add([]byte("garbage\n\n{}\n{\"k\":\"b\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, historyFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.HistoryMaxRecords = 50
		cfg.HistoryMaxAddresses = 10
		h := newHistory(&cfg, slog.New(slog.DiscardHandler))
		now := time.Date(2026, 1, 2, 3, 10, 0, 0, time.UTC)
		if err := h.load(histPath(dir), now); err != nil {
			t.Fatal(err)
		}
		if h.nrecs > 50 || len(h.addrs) > 10 {
			t.Fatalf("bounds: %d records, %d addresses", h.nrecs, len(h.addrs))
		}
		h.snapshot(now.Add(-time.Hour), time.Minute, now)
	})
}
