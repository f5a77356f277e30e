package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"gopkg.in/natefinch/lumberjack.v2"
)

// logOutput is where `agua serve` logs: stderr, or log.file rotated by size
// and age (lumberjack). The file is opened once here so that a bad path
// fails the start instead of every later log line.
func logOutput(cfg config.Config, stderr io.Writer) (io.Writer, io.Closer, error) {
	if cfg.Log.File == "" {
		return stderr, io.NopCloser(nil), nil
	}
	path := cfg.Resolve(cfg.Log.File)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, nil, fmt.Errorf("log.file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("log.file: %w", err)
	}
	f.Close()
	lj := &lumberjack.Logger{
		Filename:   path,
		MaxSize:    int((cfg.Log.MaxSize + (1<<20 - 1)) >> 20),                  // MiB
		MaxAge:     int((cfg.Log.MaxAge + 24*time.Hour - 1) / (24 * time.Hour)), // days
		MaxBackups: cfg.Log.MaxBackups,
	}
	return lj, lj, nil
}
