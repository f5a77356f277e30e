package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pgqueue"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuehttp"
	"github.com/agua-mail/agua/internal/server"
)

const queueUsage = "queue list | show ID | retry ID|-all | hold ID | release ID | delete ID | stats  [-json]"

// cmdQueue runs the operator's queue commands: on the queue folder itself
// when no server has it open, else through the running server's admin API;
// with [postgres] queue, on the database directly (several processes share
// it safely).
func cmdQueue(e *env) error {
	asJSON := e.flags.Bool("json", false, "print JSON")
	all := e.flags.Bool("all", false, "retry: every message")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef(queueUsage)
	}
	op, args := pos[0], pos[1:]
	wantArgs := map[string]int{"list": 0, "stats": 0, "show": 1, "hold": 1, "release": 1, "delete": 1, "retry": 1}
	n, known := wantArgs[op]
	if op == "retry" && *all {
		n = 0
	}
	if !known || len(args) != n {
		return usagef(queueUsage)
	}
	// Checked here rather than by the queue, so that the hint holds when
	// the running server answers through its admin API too.
	if n == 1 && !queue.ValidID(args[0]) {
		return fmt.Errorf("%w %q: %s", queue.ErrBadID, args[0], queueIDHint)
	}
	ops, remote, done, err := openQueue(e)
	if err != nil {
		return err
	}
	defer done()
	stats := func() (queue.Stats, error) { return ops.Stats(), nil }
	if q, ok := ops.(*pgqueue.Queue); ok {
		stats = q.Figures // a database that does not answer is an error, not an empty queue
	}
	switch op {
	case "list":
		l, err := ops.List()
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, l)
		}
		return printQueue(e, l)
	case "show":
		m, err := ops.Get(args[0])
		if err != nil {
			return withIDHint(err, args[0])
		}
		return printJSON(e, m)
	case "stats":
		var st queue.Stats
		if remote != nil {
			err = remote.Do("GET", "/v1/queue/stats", nil, &st)
		} else {
			st, err = stats()
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, st)
		}
		fmt.Fprintf(e.stdout, "messages %d (%d held), recipients waiting %d (%d deferred), %d bytes\n", st.Messages, st.Held, st.Recipients, st.Deferred, st.Bytes)
		if !st.Oldest.IsZero() {
			fmt.Fprintf(e.stdout, "oldest   %s (%s ago)\n", st.Oldest.Format(time.DateTime), time.Since(st.Oldest).Round(time.Second))
		}
		for d, n := range st.ByDomain {
			fmt.Fprintf(e.stdout, "  %-30s %d\n", d, n)
		}
		return nil
	case "retry":
		if *all {
			var n int
			if remote != nil {
				n, err = queuehttp.Client{Do: remote.Do}.RetryAllRemote()
			} else {
				n, err = queuehttp.RetryAll(ops, time.Now())
			}
			if err == nil {
				fmt.Fprintf(e.stdout, "%d messages retried\n", n)
			}
			return err
		}
		err = ops.Retry(args[0], time.Now())
	case "hold":
		err = ops.Hold(args[0])
	case "release":
		err = ops.Release(args[0])
	case "delete":
		err = ops.Delete(args[0])
	}
	if err == nil {
		fmt.Fprintln(e.stdout, "ok")
		return nil
	}
	if len(args) == 1 {
		return withIDHint(err, args[0])
	}
	return err
}

// queueIDHint says what a queue ID is and where to find one.
const queueIDHint = "a message ID is lower-case hex, 24 digits as `agua queue list` shows them (e.g. 1879f0c2a3b4d5e6a1b2c3d4)"

// withIDHint names the ID that matched no queued message and points to
// `agua queue list`.
func withIDHint(err error, id string) error {
	if errors.Is(err, queue.ErrNotFound) {
		return fmt.Errorf("%w %q: it may have been delivered or deleted; `agua queue list` shows the queued ones", err, id)
	}
	return err
}

// openQueue opens the queue folder, or, when the running server holds it,
// returns a client of its admin API.
func openQueue(e *env) (ops queuehttp.Ops, remote *admin.Client, done func(), err error) {
	if e.cfg.Postgres.Queue {
		return openPGQueue(e)
	}
	q, err := queue.Open(server.QueueDir(e.cfg), server.QueueOptions(e.cfg))
	if err == nil {
		return q, nil, func() { q.Close() }, nil
	}
	if !errors.Is(err, queue.ErrLocked) {
		return nil, nil, nil, err
	}
	c := admin.NewClient(server.AdminSocket(e.cfg))
	return queuehttp.Client{Do: c.Do}, c, func() {}, nil
}

// openPGQueue opens the queue on PostgreSQL, checking that the database's
// schema is this binary's.
func openPGQueue(e *env) (queuehttp.Ops, *admin.Client, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := server.OpenPostgres(ctx, e.cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := pg.Ready(ctx, pool, server.PostgresMigrations()); err != nil {
		pool.Close()
		return nil, nil, nil, fmt.Errorf("postgres: %w", err)
	}
	q, err := pgqueue.New(pool, pgqueue.Options{Node: "agua-queue-cli"})
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	return q, nil, func() { q.Close(); pool.Close() }, nil
}

func printQueue(e *env, l []queue.Message) error {
	if len(l) == 0 {
		fmt.Fprintln(e.stdout, "queue is empty")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSIZE\tRECEIVED\tFROM\tRECIPIENTS")
	for _, m := range l {
		from := m.Envelope.From
		if from == "" {
			from = "<>"
		}
		if m.Held {
			from += " (held)"
		}
		var rs []string
		for _, r := range m.Rcpts {
			s := r.Addr + " " + r.Status.String()
			if r.Status == queue.Deferred {
				s += fmt.Sprintf(" #%d next %s", r.Attempts, r.Next.Format(time.TimeOnly))
			}
			rs = append(rs, s)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", m.ID, m.Size, m.Envelope.Received.Format(time.DateTime), from, strings.Join(rs, ", "))
	}
	return tw.Flush()
}
