package mailauth

import (
	"bytes"
	"context"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// BenchmarkVerify is the cost of authenticating one message with every
// record already in the resolver's cache: SPF (one TXT, ip4 match), two
// DKIM signatures (ed25519 and RSA-2048, agua's dual signing), the DMARC
// record, the Authentication-Results field and the spliced message.
//
//	go test -run '^$' -bench Verify -benchmem ./internal/mailauth/
func BenchmarkVerify(b *testing.B) {
	w := newWorld(b)
	m := w.aguaSign(b, "alice@bank.example", msg("Alice <alice@bank.example>", "statement", "Your balance is 10.\n"))
	env := Envelope{IP: netip.MustParseAddr("192.0.2.10"), Helo: "mx.bank.example", From: "alice@bank.example"}
	run := func() {
		ch := w.c.Begin(context.Background(), env)
		r, err := ch.Finish(context.Background(), bytes.NewReader(m), int64(len(m)))
		ch.Close()
		if err != nil || r.DMARC.Result != "pass" {
			b.Fatalf("dmarc %v %v", r.DMARC.Result, err)
		}
		r.Message(bytes.NewReader(m), int64(len(m)))
	}
	run() // fills the cache
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for b.Loop() {
		run()
	}
	// CPU time of the process per message: on a loaded machine the wall
	// time per op is mostly waiting for a core (the SPF goroutine and the
	// per-signature verifiers each need one), the CPU time is the cost.
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e3, "cpu-µs/op")
}

// cpuTime is the user and system CPU time used by the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
