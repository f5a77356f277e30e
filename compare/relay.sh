#!/usr/bin/env bash
# Queue-and-relay throughput, side by side (issue 12): COUNT messages of
# SIZE bytes submitted by SESSIONS concurrent clients and relayed to a
# local smtp-sink, through agua and through Postfix, on this machine,
# loopback only. Run as root (Postfix needs it) from anywhere:
#
#   COUNT=20000 compare/relay.sh [OUT_DIR]
#
#   agua     submission with STARTTLS + AUTH PLAIN (`agua bench -proto
#            submission`), outbound.relay_host = the sink (the smart-host
#            path: queue, then SMTP to the next hop)
#   Postfix  a private instance configured here in a temporary folder
#            (its own main.cf, master.cf, queue; the system's Postfix, if
#            any, is left alone), relayhost = the sink; the same client
#            over plain SMTP from mynetworks, WITHOUT AUTH or TLS (Postfix
#            SASL needs Dovecot or Cyrus set up as well): its figures carry
#            less work per message than agua's
#
# For each: end-to-end messages/s (first connection until the queue is
# empty, every message accepted by the sink) and CPU seconds per message of
# the server's whole process tree (from /proc, before and after: own time
# of every live process plus what the root reaped). Then agua's
# submission accept latency (MAIL FROM to the 250 after DATA, per message,
# measured with Python's smtplib over authenticated sessions) to a local
# recipient and to a remote one: p50 and p99 of LAT_COUNT messages each.
#
# Environment: COUNT (20000), SESSIONS (20), SIZE (2048), LAT_COUNT (2000),
# WORK (a new folder under /tmp, removed at the end unless KEEP=1).
# A smoke run: COUNT=200 LAT_COUNT=100 compare/relay.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/compare/results/relay-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
count=${COUNT:-20000}
sessions=${SESSIONS:-20}
size=${SIZE:-2048}
latcount=${LAT_COUNT:-2000}
work=${WORK:-$(mktemp -d /tmp/agua-relay.XXXXXX)}
chmod 755 "$work" # Postfix's unprivileged processes read their queue under it
pass='relay bench password'

SINK=127.0.0.1:2625
AG_SMTP=127.0.0.1:3625 AG_SUB=127.0.0.1:3687
PF_SMTP=127.0.0.1:2627

[ "$(id -u)" = 0 ] || { echo "run as root (Postfix)" >&2; exit 1; }
for c in smtp-sink postfix postqueue python3 go; do
  command -v "$c" >/dev/null || { echo "$c not found (Debian: apt-get install postfix python3)" >&2; exit 1; }
done
per=10 # messages per session
if [ $((count % (sessions * per))) -ne 0 ]; then
  echo "COUNT must be a multiple of SESSIONS x $per" >&2; exit 1
fi
rounds=$((count / sessions / per))

agua=$work/agua
cfg=$work/agua.toml
# shellcheck source=compare/lib.sh
. "$root/compare/lib.sh"
for a in $SINK $AG_SMTP $AG_SUB $PF_SMTP; do
  if busy "$a"; then echo "something already listens on $a" >&2; exit 1; fi
done

pids=()
pf_etc=$work/postfix/etc
cleanup() {
  [ -f "$pf_etc/main.cf" ] && postfix -c "$pf_etc" stop >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

# --- the sink ---------------------------------------------------------------
log "smtp-sink on $SINK"
smtp-sink -u nobody "$SINK" 1000 > "$out/sink.log" 2>&1 &
pids+=($!)
wait_port "$SINK"

# --- agua -------------------------------------------------------------------
build_agua
cat > "$cfg" <<EOF
# agua relaying to smtp-sink (compare/relay.sh): defaults otherwise.
data_dir = "$work/agua-data"
[log]
level = "warn"
[accounts]
demo = false
[smtp]
listen = ["$AG_SMTP"]
submission_listen = ["$AG_SUB"]
submissions_listen = []
[pop3]
listen = []
tls_listen = []
[imap]
listen = []
tls_listen = []
[admin]
listen = ""
[outbound]
relay_host = "$SINK"
relay_require_tls = false

# One account sends the whole benchmark, from many addresses (agua bench
# draws its clients from -legit-pool, a fresh address per session): the
# trip switch's per-account limits and its "logins from many networks"
# signal (made for people) are raised so that they measure nothing here.
[outbound.limits]
suspend_login_networks = 100000000
messages_per_hour = 100000000
messages_per_day = 100000000
new_recipients_per_day = 100000000
domain_messages_per_hour = 100000000
domain_messages_per_day = 100000000
EOF
"$agua" domain add example.test -config "$cfg" >/dev/null
for u in bench local; do printf '%s\n' "$pass" | "$agua" user add "$u@example.test" -config "$cfg" >/dev/null; done
"$agua" serve -config "$cfg" >> "$out/agua.log" 2>&1 &
agua_pid=$!
pids+=("$agua_pid")
wait_port "$AG_SUB"

# tree_cpu PID: CPU seconds used so far by PID's process tree: the root's
# own and reaped children's time (Postfix's master reaps its services),
# plus the live descendants' own time.
tree_cpu() {
  python3 - "$1" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def stat(p):
    s = open(f"/proc/{p}/stat").read()
    return s[s.rindex(")") + 2:].split()
kids = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try: kids.setdefault(int(stat(d)[1]), []).append(int(d))
        except OSError: pass
root, total, todo = int(sys.argv[1]), 0, [int(sys.argv[1])]
while todo:
    p = todo.pop()
    try: f = stat(p)
    except OSError: continue
    total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if p == root else 0)
    todo += kids.get(p, [])
print(total / tick)
PY
}

queue_empty_agua() { "$agua" queue stats -json -config "$cfg" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["messages"] == 0 else 1)'; }
queue_empty_postfix() { postqueue -c "$pf_etc" -p 2>/dev/null | grep -q "Mail queue is empty"; }

# run NAME TREE_PID EMPTY_FN BENCH_ARGS...: the load, then wait for the
# queue to empty; NAME.json has the figures.
run() {
  local name=$1 tree=$2 empty=$3; shift 3
  log "$name: $count messages, $sessions sessions"
  local t0 t1 t2 c0 c1
  c0=$(tree_cpu "$tree")
  t0=$(date +%s.%N)
  "$agua" bench -quiet -json -legit "$sessions" -per-session "$per" -sessions "$rounds" -size "$size" \
    -duration 24h -pid 0 -rcpt sink@sink.test "$@" > "$out/$name.bench.json"
  t1=$(date +%s.%N)
  for _ in $(seq 36000); do "$empty" && break; sleep 0.1; done
  t2=$(date +%s.%N)
  c1=$(tree_cpu "$tree")
  python3 - "$name" "$count" "$t0" "$t1" "$t2" "$c0" "$c1" "$out/$name.bench.json" > "$out/$name.json" <<'PY'
import json, sys
name, count = sys.argv[1], int(sys.argv[2])
t0, t1, t2, c0, c1 = map(float, sys.argv[3:8])
b = json.load(open(sys.argv[8]))
if b["legit"]["messages"] != count:
    # A figure over messages that were not all accepted would flatter.
    sys.exit(f"{name}: {b['legit']['messages']} of {count} messages accepted; see the server's log")
print(json.dumps({"name": name, "messages": count, "accepted": b["legit"]["messages"], "accept_s": round(t1 - t0, 3),
  "end_to_end_s": round(t2 - t0, 3), "end_to_end_msgs_per_s": round(count / (t2 - t0), 1),
  "cpu_s": round(c1 - c0, 2), "cpu_ms_per_msg": round(1000 * (c1 - c0) / max(count, 1), 3)}))
PY
  cat "$out/$name.json" >&2
}

run agua "$agua_pid" queue_empty_agua -proto submission -target "$AG_SUB" -user bench@example.test -pass "$pass"

# --- agua's accept latency: local vs remote recipient ----------------------
latency() { # NAME RCPT
  log "accept latency, $1 recipient: $latcount messages"
  python3 - "$AG_SUB" "bench@example.test" "$pass" "$2" "$latcount" "$sessions" "$size" > "$out/latency-$1.json" <<'PY'
import json, smtplib, ssl, sys, threading, time
addr, user, pw, rcpt, n, sessions, size = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
host, port = addr.rsplit(":", 1)
body = ("From: %s\r\nTo: %s\r\nSubject: latency\r\n\r\n" % (user, rcpt)).encode()
body += b"x" * 76 + b"\r\n"
body = body * max(1, size // len(body))
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
times, lock = [], threading.Lock()
def client(k):
    s = smtplib.SMTP(host, int(port), timeout=60)
    s.starttls(context=ctx); s.login(user, pw)
    mine = []
    for _ in range(k):
        t = time.perf_counter(); s.sendmail(user, [rcpt], body); mine.append(time.perf_counter() - t)
    s.quit()
    with lock: times.extend(mine)
ts = [threading.Thread(target=client, args=(n // sessions,)) for _ in range(sessions)]
for t in ts: t.start()
for t in ts: t.join()
times.sort()
q = lambda f: round(1000 * times[min(len(times) - 1, int(f * len(times)))], 3)
print(json.dumps({"messages": len(times), "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": round(1000 * times[-1], 3)}))
PY
  cat "$out/latency-$1.json" >&2
}
latency local local@example.test
latency remote sink@sink.test
for _ in $(seq 36000); do queue_empty_agua && break; sleep 0.1; done
kill -INT "$agua_pid"; wait "$agua_pid" 2>/dev/null || true

# --- Postfix, a private instance --------------------------------------------
log "Postfix instance in $work/postfix"
mkdir -p "$pf_etc" "$work/postfix/spool" "$work/postfix/data"
chown postfix "$work/postfix/data"
cp /usr/share/postfix/master.cf.dist "$pf_etc/master.cf" 2>/dev/null || cp /etc/postfix/master.cf "$pf_etc/master.cf"
touch "$work/postfix/maillog"
cat > "$pf_etc/main.cf" <<EOF
# Postfix relaying to smtp-sink (compare/relay.sh); defaults otherwise.
compatibility_level = 3.6
queue_directory = $work/postfix/spool
data_directory = $work/postfix/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay-bench.localdomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [${SINK%:*}]:${SINK#*:}
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = $work/postfix/maillog
maillog_file_prefixes = $work/postfix
EOF
postconf -c "$pf_etc" -MX smtp/inet
postconf -c "$pf_etc" -M "$PF_SMTP/inet=$PF_SMTP inet n - n - - smtpd"
postconf -c "$pf_etc" -F '*/*/chroot = n'
postfix -c "$pf_etc" check
postfix -c "$pf_etc" start
wait_port "$PF_SMTP"
pf_pid=$(tr -d ' \n' < "$work/postfix/spool/pid/master.pid")
run postfix "$pf_pid" queue_empty_postfix -proto smtp -target "$PF_SMTP" -from bench@example.test
postconf -c "$pf_etc" mail_version > "$out/postfix-version.txt"

# --- summary ------------------------------------------------------------------
python3 - "$out" > "$out/summary.md" <<'PY'
import json, os, sys
d = sys.argv[1]
j = lambda n: json.load(open(os.path.join(d, n)))
a, p, ll, lr = j("agua.json"), j("postfix.json"), j("latency-local.json"), j("latency-remote.json")
print("| relay to smtp-sink | messages | end-to-end msg/s | CPU ms/msg | accept s | drained s |")
print("|---|---|---|---|---|---|")
for r in (a, p):
    print(f"| {r['name']} | {r['messages']} | {r['end_to_end_msgs_per_s']} | {r['cpu_ms_per_msg']} | {r['accept_s']} | {r['end_to_end_s']} |")
print()
print(f"agua / Postfix end-to-end: {a['end_to_end_msgs_per_s'] / p['end_to_end_msgs_per_s']:.2f}x")
print()
print("| agua accept latency (MAIL..250) | messages | p50 ms | p99 ms |")
print("|---|---|---|---|")
print(f"| local recipient | {ll['messages']} | {ll['p50_ms']} | {ll['p99_ms']} |")
print(f"| remote recipient | {lr['messages']} | {lr['p50_ms']} | {lr['p99_ms']} |")
print()
print(f"remote / local p99: {lr['p99_ms'] / ll['p99_ms']:.2f}x")
PY
cat "$out/summary.md"
