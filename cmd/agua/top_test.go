package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
)

// The live view of agua top says how to leave it, and Ctrl-C (SIGINT)
// leaves it with exit 0.
func TestTopLiveSaysHowToQuit(t *testing.T) {
	data := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = data
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionListen = nil
	cfg.SMTP.SubmissionsListen = nil
	cfg.Admin.Listen = ""
	cfg.POP3.Listen, cfg.POP3.TLSListen = nil, nil
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = nil, nil
	runServer(t, cfg, nil)

	child := exec.Command(os.Args[0], "top", "-interval", "100ms", "-data", data)
	child.Env = append(os.Environ(), "AGUA_TEST_CLI=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(20*time.Second, func() { child.Process.Kill() })
	defer timer.Stop()
	sc := bufio.NewScanner(out)
	found := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Ctrl-C quits") {
			found = true
			break
		}
	}
	if !found {
		t.Fatal("the live view never said how to quit")
	}
	child.Process.Signal(syscall.SIGINT)
	go func() {
		for sc.Scan() {
		}
	}()
	if err := child.Wait(); err != nil {
		t.Errorf("agua top after Ctrl-C: %v", err)
	}
}
