package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// TestLogFileRotates: log.file is written and rotated at max_size; a path
// that cannot be created fails at start.
func TestLogFileRotates(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Log.File = "logs/agua.log"
	cfg.Log.MaxSize = 1 << 20
	cfg.Log.Format = "json"
	w, c, err := logOutput(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := newLogger(cfg, w)
	pad := strings.Repeat("x", 200)
	for range 6000 { // about 1.5 MiB
		log.Info("shield denied", "addr", "203.0.113.7", "pad", pad)
	}
	c.Close()
	files, _ := filepath.Glob(filepath.Join(cfg.DataDir, "logs", "agua*.log"))
	if len(files) != 2 {
		t.Fatalf("want the log and one rotated file, got %v", files)
	}
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Size() > 1<<20 {
			t.Errorf("%s: %v, size %d", f, err, st.Size())
		}
	}

	cfg.Log.File = filepath.Join(files[0], "agua.log") // below a file
	if _, _, err := logOutput(cfg, nil); err == nil || !strings.Contains(err.Error(), "log.file") {
		t.Errorf("bad path: %v", err)
	}
	cfg.Log.File = ""
	var buf bytes.Buffer
	if w, _, err := logOutput(cfg, &buf); err != nil || w != &buf {
		t.Errorf("empty log.file must log to stderr")
	}
}
