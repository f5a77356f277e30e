package outbound

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	cases := []struct {
		in   string
		want Reply
		err  error
	}{
		{"250 ok\r\n", Reply{Code: 250, Lines: []string{"ok"}}, nil},
		{"550 5.1.1 no such user\r\n", Reply{Code: 550, Enhanced: "5.1.1", Lines: []string{"no such user"}}, nil},
		{"250-mx hello\r\n250-PIPELINING\r\n250 SIZE 100\r\n", Reply{Code: 250, Lines: []string{"mx hello", "PIPELINING", "SIZE 100"}}, nil},
		{"451-4.7.1 one\r\n451 4.7.1 two\r\n", Reply{Code: 451, Enhanced: "4.7.1", Lines: []string{"one", "two"}}, nil},
		{"250 4.1.1 class mismatch is text\r\n", Reply{Code: 250, Lines: []string{"4.1.1 class mismatch is text"}}, nil},
		{"220\r\n", Reply{Code: 220, Lines: []string{""}}, nil},
		{"HTTP/1.1 400\r\n", Reply{}, ErrProtocol},
		{"250-a\r\n550 b\r\n", Reply{}, ErrProtocol},
		{"25\r\n", Reply{}, ErrProtocol},
		{"250_x\r\n", Reply{}, ErrProtocol},
		{"999 x\r\n", Reply{}, ErrProtocol},
		{strings.Repeat("250-x\r\n", 10000) + "250 x\r\n", Reply{}, ErrProtocol},
		{"250 " + strings.Repeat("x", 5000) + "\r\n", Reply{}, ErrProtocol},
	}
	for _, tc := range cases {
		got, err := readReply(bufio.NewReaderSize(strings.NewReader(tc.in), maxReplyLine))
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%.30q: err %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.Code != tc.want.Code || got.Enhanced != tc.want.Enhanced || strings.Join(got.Lines, "|") != strings.Join(tc.want.Lines, "|") {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestStatusCode(t *testing.T) {
	for in, want := range map[string]string{
		"550 5.1.1 unknown":            "5.1.1",
		"4.4.7 expired; last: 451 x":   "4.4.7",
		"554 no enhanced code":         "5.0.0",
		"451 temporary":                "4.0.0",
		"556 5.1.10 null MX":           "5.1.10",
		"550 9.9.9 not a status code":  "5.0.0",
		"552 5.3.4 too big (5.0.0000)": "5.3.4",
	} {
		if got := statusCode(in); got != want {
			t.Errorf("statusCode(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzReadReply: any bytes give a reply or an error, never a panic, and a
// reply never holds more lines than allowed.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250 b\r\n", "550 5.1.1 x\r\n", "", "\r\n", "2", "250-\n250 \n", "421-4.7.0 x\r\n421 4.7.0 y\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(strings.NewReader(string(b)), maxReplyLine)
		for range 5 {
			rep, err := readReply(r)
			if err != nil {
				return
			}
			if len(rep.Lines) > maxReplyLines || rep.Code < 200 || rep.Code > 599 {
				t.Fatalf("reply %+v", rep)
			}
		}
	})
}
