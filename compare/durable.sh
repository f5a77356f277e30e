#!/usr/bin/env bash
# Durable accept, agua against Postfix (issue 15): smtp-source sends COUNT
# messages of SIZE bytes to one local mailbox, with 20 concurrent sessions
# and with 1, each with the load generator and the server sharing the
# cores (unpinned) and with smtp-source pinned to CPU 0 and the server's
# whole process tree to CPU 1 (taskset), so that the load generator's share
# shows. Run as root (Postfix) from anywhere:
#
#   compare/durable.sh [OUT_DIR]
#   COUNT=400 COUNT1=100 compare/durable.sh      # a smoke run
#
#   agua     `agua serve` on a data folder of its own, [store] sync = SYNC:
#            the 250 after DATA comes once the message is in the Maildir
#            and on disk
#   Postfix  the Debian Postfix as compare/postfix-dovecot.sh configures it
#            (postscreen, smtpd, virtual(8) into Maildirs): its 250 comes
#            once the queue file is on disk; the delivery into the Maildir
#            follows, and is timed too (until the queue is empty)
#
# Both see the client at 127.0.0.1: agua's default allowlist and Postfix's
# mynetworks, so neither applies its per-client limits; neither checks
# SPF, DKIM or DMARC.
#
# Per run: accepted messages/s, for Postfix also messages/s into the
# Maildir, CPU ms per message of the server's process tree (from /proc,
# before and after, delivery included) and of smtp-source itself.
# OUT_DIR/durable.jsonl has one line per run, OUT_DIR/summary.md the table
# with agua/Postfix ratios.
#
# The floor: smtp-sink(1), Postfix's test server, in the same run (SINK=1,
# the default). It is a single C process on one event loop that answers
# every command at once and throws the message away: no file, no flush, no
# policy. Its rate and CPU per message are what the client, the loopback
# TCP stack and this machine's system calls cost on their own, the bound
# under any durable server's figures here.
#
# PG=1 adds a third server: agua with the accounts and the mailboxes on
# PostgreSQL ([postgres] accounts, mail; issue 17), against a PostgreSQL
# this script starts (initdb in WORK/pg, loopback port 3732, fsync and
# synchronous_commit on, as the postgres user): its 250 comes after the
# COMMIT. Its CPU figure is agua's tree plus PostgreSQL's.
#
# AUTH=1 adds two more agua servers on Maildir, identical but for [auth]:
# agua-open (checks off) and agua-auth (SPF, DKIM, DMARC on, asking
# compare/dnsstub on 127.0.0.1:5399, which answers for bench.example with
# an SPF pass and a DMARC p=none record, cached for their TTL). Both
# allowlist nobody (allowlisted clients skip the checks) and raise the
# per-address limits and the message, recipient and network_message thresholds, so that
# smtp-source at 127.0.0.1 is served; issue 14
# asks for checks on within 20% of checks off.
#
# Environment: COUNT (4000: messages with 20 sessions), COUNT1 (1000: with
# 1 session), SIZE (2048), RUNS ("20 1": session counts), PIN ("no yes"),
# SYNC (syncfs, or fsync: agua's [store] sync), SINK (1: also smtp-sink), WORK (/var/tmp/agua-durable,
# agua's data), KEEP_RUNNING (1: leave Postfix running).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/compare/results/durable-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
count=${COUNT:-4000}
count1=${COUNT1:-1000}
size=${SIZE:-2048}
runs=${RUNS:-20 1}
pins=${PIN:-no yes}
work=${WORK:-/var/tmp/agua-durable}
pd="$root/compare/postfix-dovecot.sh"
AG_SMTP=127.0.0.1:3725
PF_SMTP=127.0.0.1:${PF_PORT:-2526}

[ "$(id -u)" = 0 ] || { echo "run as root (Postfix)" >&2; exit 1; }
for c in smtp-source smtp-sink taskset postfix python3 go; do
  command -v "$c" >/dev/null || { echo "$c not found (Debian: apt-get install postfix util-linux python3)" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "pinning needs 2 CPUs" >&2; exit 1; }

agua=$work/agua
cfg=$work/agua.toml
agua_pid=
# shellcheck source=compare/lib.sh
. "$root/compare/lib.sh"
cleanup() {
  for p in "$agua_pid" "${aguapg_pid:-}" "${aguaopen_pid:-}" "${aguaauth_pid:-}"; do stop_pid "$p"; done
  [ -z "${stub_pid:-}" ] || kill "$stub_pid" 2>/dev/null || true
  [ -z "${sink_pid:-}" ] || kill "$sink_pid" 2>/dev/null || true
  # runuser does not pass SIGINT on to postgres: pg_ctl stops it.
  [ -z "${pg_pid:-}" ] || { runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1; wait "$pg_pid" 2>/dev/null; } || true
  stop_postfix_dovecot
}
trap cleanup EXIT

# --- agua --------------------------------------------------------------------
build_agua
rm -rf "$work/data"
cat > "$cfg" <<EOF
# agua under compare/durable.sh: defaults, ports of its own.
data_dir = "$work/data"
[log]
level = "warn"
[accounts]
demo = false
[store]
sync = "${SYNC:-syncfs}"
[smtp]
listen = ["$AG_SMTP"]
submission_listen = []
submissions_listen = []
[pop3]
listen = []
tls_listen = []
[imap]
listen = []
tls_listen = []
[admin]
listen = ""
[auth]
enabled = false
EOF
"$agua" domain add example.test -config "$cfg" >/dev/null
echo 'durable bench password' | "$agua" user add demo@example.test -config "$cfg" >/dev/null
serve_agua "$cfg" "$out/agua.log"
agua_pid=$serve_pid
wait_port "$AG_SMTP"

# --- the floor: smtp-sink (SINK=1) ----------------------------------------------
SINK_SMTP=127.0.0.1:3727
sink_pid=
if [ "${SINK:-1}" = 1 ]; then
  # -u: as root it must drop privileges; 256: its listen backlog.
  smtp-sink -u nobody "$SINK_SMTP" 256 &
  sink_pid=$!
  wait_port "$SINK_SMTP"
fi

# --- agua on PostgreSQL (PG=1) -------------------------------------------------
AG_PG_SMTP=127.0.0.1:3726
aguapg_pid= pg_pid=
if [ "${PG:-0}" = 1 ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  rm -rf "$work/pg" "$work/data-pg"; mkdir -p "$work/pg"; chown postgres "$work/pg"
  runuser -u postgres -- "$pgbin/initdb" -D "$work/pg/data" -A trust -U agua -E UTF8 --no-instructions >/dev/null
  printf "listen_addresses = '127.0.0.1'\nport = 3732\nunix_socket_directories = '%s'\nmax_connections = 100\n" "$work/pg" >> "$work/pg/data/postgresql.conf"
  runuser -u postgres -- "$pgbin/postgres" -D "$work/pg/data" >> "$out/postgres.log" 2>&1 &
  pg_pid=$!
  wait_port 127.0.0.1:3732
  sleep 1
  "$pgbin/psql" -h 127.0.0.1 -p 3732 -U agua -d postgres -qc 'CREATE DATABASE agua' >/dev/null
  sed -e "s|$work/data\"|$work/data-pg\"|" -e "s|$AG_SMTP|$AG_PG_SMTP|" "$cfg" > "$work/agua-pg.toml"
  printf '[postgres]\nurl = "postgres://agua@127.0.0.1:3732/agua?sslmode=disable"\nmigrate = true\naccounts = true\nmail = true\n' >> "$work/agua-pg.toml"
  "$agua" db migrate -config "$work/agua-pg.toml" >/dev/null
  "$agua" domain add example.test -config "$work/agua-pg.toml" >/dev/null
  echo 'durable bench password' | "$agua" user add demo@example.test -config "$work/agua-pg.toml" >/dev/null
  serve_agua "$work/agua-pg.toml" "$out/agua-pg.log"
  aguapg_pid=$serve_pid
  wait_port "$AG_PG_SMTP"
fi

# --- agua with and without [auth], nobody allowlisted (AUTH=1) -------------------
AG_OPEN_SMTP=127.0.0.1:3727 AG_AUTH_SMTP=127.0.0.1:3728
aguaopen_pid= aguaauth_pid= stub_pid=
if [ "${AUTH:-0}" = 1 ]; then
  (cd "$root" && go build -o "$work/dnsstub" ./compare/dnsstub)
  "$work/dnsstub" -listen 127.0.0.1:5399 -domain bench.example >> "$out/dnsstub.log" 2>&1 &
  stub_pid=$!
  for v in open auth; do
    rm -rf "$work/data-$v"
    port=$AG_OPEN_SMTP; enabled=false
    [ "$v" = auth ] && { port=$AG_AUTH_SMTP; enabled=true; }
    sed -e "s|$work/data\"|$work/data-$v\"|" -e "s|$AG_SMTP|$port|" -e "/^\[auth\]/,\$d" "$cfg" > "$work/agua-$v.toml"
    printf '[auth]\nenabled = %s\n[dns]\nresolver = ["127.0.0.1:5399"]\n[shield]\nallow = []\n[shield.limits]\nper_ip_conns = 1000\nper_ip_rate = 100000.0\nper_ip_burst = 100000\nper_prefix_conns = 1000\nper_prefix_rate = 100000.0\nper_prefix_burst = 100000\n[shield.thresholds.message]\ncount = 10000000\n[shield.thresholds.recipient]\ncount = 10000000\n[shield.thresholds.network_message]\ncount = 10000000\n' "$enabled" >> "$work/agua-$v.toml"
    "$agua" domain add example.test -config "$work/agua-$v.toml" >/dev/null
    echo 'durable bench password' | "$agua" user add demo@example.test -config "$work/agua-$v.toml" >/dev/null
    serve_agua "$work/agua-$v.toml" "$out/agua-$v.log"
    eval "agua${v}_pid=\$serve_pid"
    wait_port "$port"
  done
fi

# --- Postfix -----------------------------------------------------------------
log "Postfix (compare/postfix-dovecot.sh)"
"$pd" install >/dev/null
"$pd" stop
USERS=demo "$pd" configure >/dev/null
postsuper -d ALL >/dev/null 2>&1 || true
"$pd" start
wait_port "$PF_SMTP"
pf_pid=$(tr -d ' \n' < /var/spool/postfix/pid/master.pid)

{
  echo "date: $(date -u '+%F %T UTC')"
  echo "nproc: $(nproc); cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
  echo "kernel: $(uname -srm); filesystem: $(df -T "$work" | awk 'NR==2 {print $1, $2}')"
  echo "agua: $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- . || echo ' (+ uncommitted changes)'), [store] sync = ${SYNC:-syncfs}"
  echo "postfix: $(postconf -h mail_version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

# pin_tree PID CPUS: every thread of PID's process tree on CPUS; children
# forked later inherit it from their parent (Postfix's master).
pin_tree() {
  local p
  for p in $(python3 - ${1//,/ } <<'PY'
import os, sys
kids = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            s = open(f"/proc/{d}/stat").read()
            kids.setdefault(int(s[s.rindex(")") + 2:].split()[1]), []).append(int(d))
        except OSError:
            pass
todo, out = [int(a) for a in sys.argv[1:]], []
while todo:
    p = todo.pop(); out.append(p); todo += kids.get(p, [])
print(" ".join(map(str, out)))
PY
  ); do taskset -a -pc "$2" "$p" >/dev/null 2>&1 || true; done
}

# one NAME ADDR TREE_PID SESSIONS PIN: one smtp-source run, one JSON line.
one() {
  local name=$1 addr=$2 tree=$3 sessions=$4 pin=$5 n=$count cpus=0-$(($(nproc) - 1)) src=()
  [ "$sessions" = 1 ] && n=$count1
  if [ "$pin" = yes ]; then
    pin_tree "$tree" 1
    src=(taskset -c 0)
  else
    pin_tree "$tree" "$cpus"
  fi
  log "$name: $n messages, $sessions sessions, pinned: $pin"
  local c0 c1 drain=0
  c0=$(python3 "$root/compare/proctree.py" cpu "$tree")
  [ "$name" = postfix ] && drain=1
  python3 - "$name" "$n" "$sessions" "$pin" "$drain" "$pd" "$root/compare/proctree.py" "$tree" "$c0" \
    "${src[@]}" smtp-source -s "$sessions" -l "$size" -m "$n" -f bench@bench.example -t demo@example.test "$addr" \
    >> "$out/durable.jsonl" <<'PY'
import json, resource, subprocess, sys, time
name, n, sessions, pin, drain, pd, proctree, tree, c0 = sys.argv[1:10]
cmd = sys.argv[10:]
t0 = time.monotonic()
r = subprocess.run(cmd, capture_output=True, text=True)
t1 = time.monotonic()
u = resource.getrusage(resource.RUSAGE_CHILDREN)
src_cpu = u.ru_utime + u.ru_stime
t2 = t1
if drain == "1":
    subprocess.run([pd, "fill-wait", "600"], check=True)
    t2 = time.monotonic()
c1 = float(subprocess.run(["python3", proctree, "cpu", tree], capture_output=True, text=True).stdout)
n = int(n)
print(json.dumps({"server": name, "sessions": int(sessions), "pinned": pin == "yes", "messages": n,
    "accept_s": round(t1 - t0, 3), "accept_per_s": round(n / (t1 - t0), 1),
    "in_maildir_per_s": round(n / (t2 - t0), 1),
    "server_cpu_ms_per_msg": round(1000 * (c1 - float(c0)) / n, 3),
    "smtp_source_cpu_ms_per_msg": round(1000 * src_cpu / n, 3),
    "errors": [l for l in (r.stdout + r.stderr).splitlines() if l.strip()][:5]}))
PY
  tail -1 "$out/durable.jsonl" >&2
  pin_tree "$tree" "$cpus"
}

: > "$out/durable.jsonl"
for s in $runs; do
  for pin in $pins; do
    [ -z "$sink_pid" ] || one smtp-sink "$SINK_SMTP" "$sink_pid" "$s" "$pin"
    one agua "$AG_SMTP" "$agua_pid" "$s" "$pin"
    [ -z "$aguapg_pid" ] || one agua-pg "$AG_PG_SMTP" "$aguapg_pid,$pg_pid" "$s" "$pin"
    [ -z "$aguaopen_pid" ] || one agua-open "$AG_OPEN_SMTP" "$aguaopen_pid" "$s" "$pin"
    [ -z "$aguaauth_pid" ] || one agua-auth "$AG_AUTH_SMTP" "$aguaauth_pid" "$s" "$pin"
    one postfix "$PF_SMTP" "$pf_pid" "$s" "$pin"
  done
done

python3 - "$out/durable.jsonl" "$(cat "$out/machine.txt")" > "$out/summary.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("# Durable accept: agua vs Postfix (compare/durable.sh)\n")
print("```\n" + sys.argv[2] + "\n```\n")
print("| sessions | pinned | agua accepted/s | Postfix accepted/s | Postfix into Maildir/s | agua/Postfix (accepted) | agua CPU ms/msg | Postfix CPU ms/msg | smtp-source CPU ms/msg (agua, Postfix) |")
print("|---|---|---|---|---|---|---|---|---|")
key = lambda r: (r["sessions"], r["pinned"])
by, pg_rows = {}, []
for r in rows:
    by.setdefault(key(r), {})[r["server"]] = r
for (s, p), d in by.items():
    a, f, g = d.get("agua"), d.get("postfix"), d.get("agua-pg")
    if not a or not f:
        continue
    if g:
        pg_rows.append(f"| {s} | {'yes' if p else 'no'} | {g['accept_per_s']} | {a['accept_per_s']} | {f['accept_per_s']} | "
                       f"{g['accept_per_s'] / f['accept_per_s']:.1f}× | {g['server_cpu_ms_per_msg']} |")
    print(f"| {s} | {'yes' if p else 'no'} | {a['accept_per_s']} | {f['accept_per_s']} | {f['in_maildir_per_s']} | "
          f"{a['accept_per_s'] / f['accept_per_s']:.1f}× | {a['server_cpu_ms_per_msg']} | {f['server_cpu_ms_per_msg']} | "
          f"{a['smtp_source_cpu_ms_per_msg']}, {f['smtp_source_cpu_ms_per_msg']} |")
floor_rows = []
for (s, p), d in by.items():
    k, a, f = d.get("smtp-sink"), d.get("agua"), d.get("postfix")
    if k and a and f:
        floor_rows.append(f"| {s} | {'yes' if p else 'no'} | {k['accept_per_s']} | {k['accept_per_s'] / f['accept_per_s']:.1f}× | "
                          f"{a['accept_per_s'] / k['accept_per_s']:.0%} | {k['server_cpu_ms_per_msg']} | {a['server_cpu_ms_per_msg']} | "
                          f"{k['smtp_source_cpu_ms_per_msg']} |")
if floor_rows:
    print("\nThe floor: smtp-sink, which answers at once and keeps nothing (no file, no flush), with the same client:\n")
    print("| sessions | pinned | smtp-sink accepted/s | smtp-sink/Postfix | agua/smtp-sink | smtp-sink CPU ms/msg | agua CPU ms/msg | smtp-source CPU ms/msg (smtp-sink) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(floor_rows))
auth_rows = []
for (s, p), d in by.items():
    o, h = d.get("agua-open"), d.get("agua-auth")
    if o and h:
        auth_rows.append(f"| {s} | {'yes' if p else 'no'} | {o['accept_per_s']} | {h['accept_per_s']} | {h['accept_per_s'] / o['accept_per_s']:.2f} | "
                         f"{o['server_cpu_ms_per_msg']} | {h['server_cpu_ms_per_msg']} |")
if auth_rows:
    print("\nSender authentication on and off (AUTH=1; nobody allowlisted, records cached):\n")
    print("| sessions | pinned | [auth] off accepted/s | [auth] on accepted/s | on/off | off CPU ms/msg | on CPU ms/msg |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(auth_rows))
if pg_rows:
    print("\nWith the accounts and mailboxes on PostgreSQL (PG=1; CPU: agua + PostgreSQL):\n")
    print("| sessions | pinned | agua on PostgreSQL accepted/s | agua Maildir accepted/s | Postfix accepted/s | PostgreSQL/Postfix | agua+PostgreSQL CPU ms/msg |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(pg_rows))
errs = [r for r in rows if r["errors"]]
if errs:
    print("\nsmtp-source reported errors: " + "; ".join(f"{r['server']} {r['sessions']}: {r['errors']}" for r in errs))
PY
cat "$out/summary.md"
log "done: $out/summary.md"
