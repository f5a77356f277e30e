package shield_test

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/agua-mail/agua/shield"
)

// A line-based TCP service behind the shield: refused clients never reach
// Accept, and sessions report what their clients do.
func ExampleShield_Listener() {
	cfg := shield.DefaultConfig()
	cfg.RuleFiles = []string{"shield.rules"} // may not exist yet: watched for creation
	s, err := shield.New(cfg, shield.Options{StateDir: "state"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ln := s.Listener(inner, shield.ListenerConfig{
		Name: "smtp",
		Reject: func(c net.Conn, d shield.Decision) {
			code := "554 5.7.1"
			if d.Temporary {
				code = "421 4.7.0"
			}
			fmt.Fprintf(c, "%s %s\r\n", code, d.Reason)
		},
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go session(s, c)
		}
	}()
}

func session(s *shield.Shield, c net.Conn) {
	defer c.Close()
	fmt.Fprintf(c, "220 ready\r\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var d shield.Decision
		switch sc.Text() {
		case "NOOP":
		default:
			d = shield.Report(c, shield.ProtocolError)
		}
		if d.Action != shield.Allow {
			fmt.Fprintf(c, "421 4.7.0 %s\r\n", d.Reason)
			return
		}
		fmt.Fprintf(c, "250 ok\r\n")
	}
}

// SPFFail is a service's own behaviour: a sender that fails SPF. It is
// counted per address (20 in 10 minutes) and per network (200 in 10
// minutes, a flood spread over a botnet), and banned for an hour each time.
var SPFFail = shield.MustRegister(shield.Behaviour{
	Name:          "spf_fail",
	Doc:           "senders that fail SPF",
	Threshold:     shield.Threshold{Count: 20, Window: 10 * time.Minute},
	Network:       shield.Threshold{Count: 200, Window: 10 * time.Minute},
	Reason:        "too many forged senders",
	NetworkReason: "too many forged senders from your network",
	BanTTL:        time.Hour,
	NoEscalation:  true,
})

func checkSender(c net.Conn, spfPass bool) bool {
	if !spfPass {
		if d := shield.Report(c, SPFFail); d.Action != shield.Allow {
			return false // answer d.Reason (421 when d.Temporary) and close
		}
	}
	return true
}

// A service defines its own behaviour (SPFFail above) and tunes it in the
// config under its name, like the built-in ones.
func ExampleRegister() {
	cfg := shield.DefaultConfig()
	cfg.Thresholds.SetCount("spf_fail", 10)
	s, err := shield.New(cfg, shield.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	fmt.Println(cfg.Thresholds["spf_fail"].Count, cfg.Thresholds["network_spf_fail"].Count)
	_ = checkSender
	// Output: 10 200
}

// Checking a password: the account's delay slows guessing from any address
// without ever locking the real user out.
func ExampleShield_AccountDelay() {
	s, err := shield.New(shield.DefaultConfig(), shield.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	login := func(c net.Conn, user string, ok bool) bool {
		d := shield.ReportAuth(c, user, ok)
		if !ok {
			time.Sleep(s.AccountDelay(user)) // only failures wait
		}
		return ok && d.Action == shield.Allow
	}
	_ = login
}

// An HTTP service: the middleware answers 403 or 429, and handlers can
// report through the request's connection.
func ExampleShield_Middleware() {
	s, err := shield.New(shield.DefaultConfig(), shield.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		ok := r.FormValue("password") == "secret"
		if c := shield.ConnFromRequest(r); c != nil {
			if d := c.ReportAuth(r.FormValue("user"), ok); d.Action != shield.Allow {
				http.Error(w, d.Reason, http.StatusForbidden)
				return
			}
		}
		if !ok {
			http.Error(w, "wrong password", http.StatusUnauthorized)
		}
	})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: s.Middleware("admin", mux), ConnContext: shield.ConnContext}
	go srv.Serve(s.Listener(inner, shield.ListenerConfig{Name: "admin"}))
	defer srv.Close()
}
