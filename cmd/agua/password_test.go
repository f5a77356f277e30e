package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// typePassword runs agua with a terminal as stdin and types lines into it
// once the echo is off (typed before, the terminal would echo them). It
// returns the exit code, stdout, stderr and what the terminal showed.
func typePassword(t *testing.T, lines []string, args ...string) (int, string, string, string) {
	t.Helper()
	master, slave := openPTY(t)
	type result struct {
		code     int
		out, err string
	}
	res := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(args, slave, &out, &errb)
		res <- result{code, out.String(), errb.String()}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agua never turned the terminal's echo off")
		}
		time.Sleep(5 * time.Millisecond)
	}
	master.Write([]byte(strings.Join(lines, "\n") + "\n"))
	r := <-res
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Errorf("the terminal's echo stays off after agua: %v", err)
	}
	master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	shown := make([]byte, 4096)
	n, _ := master.Read(shown)
	return r.code, r.out, r.err, string(shown[:n])
}

// At a terminal, `agua user add` asks for the password twice without
// showing it; before, it waited silently for a line and echoed it.
func TestPasswordAtTerminal(t *testing.T) {
	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "example.org", "-data", data)
	code, out, errs, shown := typePassword(t, []string{"tty-secret-1", "tty-secret-1"}, "user", "add", "bob@example.org", "-data", data)
	if code != 0 || !strings.Contains(out, "user bob@example.org added") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if !strings.Contains(errs, "password for bob@example.org (not shown): ") || !strings.Contains(errs, "the same again: ") {
		t.Errorf("no prompts on stderr: %q", errs)
	}
	if strings.Contains(shown, "tty-secret") {
		t.Errorf("the terminal showed the password: %q", shown)
	}

	code, _, errs, _ = typePassword(t, []string{"tty-secret-2", "tty-secret-3"}, "user", "passwd", "bob@example.org", "-data", data)
	if code != 1 || !strings.Contains(errs, "the two passwords differ; nothing changed") {
		t.Errorf("different entries: exit %d, stderr %q", code, errs)
	}
	// Piped, as scripts and the README do, it is one line, no prompt.
	code, _, errs = agua(t, "piped-secret\n", "user", "passwd", "bob@example.org", "-data", data)
	if code != 0 || errs != "" {
		t.Errorf("piped: exit %d, stderr %q", code, errs)
	}
}
