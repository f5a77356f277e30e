package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"golang.org/x/sys/unix"
)

// errPasswordsDiffer: the two entries at the terminal were not the same.
var errPasswordsDiffer = errors.New("the two passwords differ; nothing changed")

// terminalPassword reads a password for address from f when f is a
// terminal: a prompt on stderr, the echo off while it is typed (the password
// is not left on the screen or in a terminal log), and a second entry to
// confirm it. ok is false when f is not a terminal (a pipe, a file): the
// caller reads a line as scripts send it.
func terminalPassword(f *os.File, stderr io.Writer, address string) (pass string, ok bool, err error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", false, nil
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", true, fmt.Errorf("terminal: %w", err)
	}
	// Ctrl-C while the echo is off must not leave the terminal without it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			unix.IoctlSetTermios(fd, unix.TCSETS, old)
			fmt.Fprintln(stderr)
			os.Exit(130)
		case <-done:
		}
	}()
	defer func() {
		signal.Stop(sig)
		close(done)
		unix.IoctlSetTermios(fd, unix.TCSETS, old)
	}()
	r := bufio.NewReader(f)
	read := func(prompt string) (string, error) {
		fmt.Fprint(stderr, prompt)
		line, err := r.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	first, err := read("password for " + address + " (not shown): ")
	if err != nil || first == "" {
		return first, true, err
	}
	second, err := read("the same again: ")
	if err != nil {
		return "", true, err
	}
	if first != second {
		return "", true, errPasswordsDiffer
	}
	return first, true, nil
}
