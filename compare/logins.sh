#!/usr/bin/env bash
# Logins and memory, agua against Dovecot (issue 15), in one run on this
# machine, loopback only. Run as root (Dovecot) from anywhere:
#
#   compare/logins.sh [OUT_DIR]            # the real run (about 8 minutes on a quiet machine)
#   SMOKE=1 compare/logins.sh [OUT_DIR]    # small counts, to prove it works (3-6 minutes)
#
# Setup: agua on a data folder and ports of its own (POP3 127.0.0.1:3810,
# IMAP :3843, SMTP :3825; none of agua's defaults), and Dovecot as
# compare/postfix-dovecot.sh configures it (POP3 :2111, IMAP :2144; its
# Postfix runs too but is not measured). USERS accounts userN@example.test
# share one argon2id hash made by `agua user hash` with agua's parameters:
# agua takes them as a passwd-file (`agua user import`) and Dovecot reads
# the same file's hash ({ARGON2ID}), so both verify the very same hash.
# The first MAILBOXES users get MSGS small messages each, delivered to
# agua over SMTP (`agua bench`) and the same files copied into Dovecot's
# Maildirs.
#
# Every legitimate client is a stranger: `agua bench` draws each session's
# source address from 127.128.0.0/9, never 127.0.0.1 (which agua
# allowlists). Each step starts agua afresh (its RSS and its login cache
# are the step's own), and Dovecot too before each of its measurements
# (its master, auth and config processes stay for the step; login and
# mail processes come and go).
#
#   idle    agua with USERS users, RSS after start + SETTLE s; then once
#           every user of the first 10 logged in (POP3) + SETTLE s; Dovecot's
#           PSS (whole process tree) at the same points
#   burst   BURST POP3 logins (USER/PASS, STAT, RETR all, QUIT) started at
#           BURST/BURST_SECONDS a second, in two variants:
#             repeat    REPEAT_USERS users x BURST/REPEAT_USERS polls each
#                       (agua's login cache answers the repeats)
#             distinct  BURST users, one login each (every one pays argon2id)
#           agua's RSS and Dovecot's PSS: peak during the burst, at its end
#           and AFTER s later
#   rate    POP3 and IMAP sessions/s as fast as they go, SESSION_USERS
#           clients each with its own user, DURATION each, repeat logins
#           (login, STAT + RETR all / SELECT + FETCH all, logout), same hash
#
# OUT_DIR/logins.json has every figure, OUT_DIR/summary.md the tables with
# the ratios against issue 15's goals: burst RSS <= 2x Dovecot's PSS, idle
# RSS with 10,000 users <= 50 MB, sessions/s >= 3x Dovecot's. Agua, Dovecot
# and Postfix are stopped at the end, whatever happens (KEEP_RUNNING=1:
# Dovecot and Postfix are left running).
#
# Environment: USERS (10000), BURST (1000), BURST_SECONDS (10), REPEAT_USERS
# (100), SETTLE (30: seconds before an idle figure), AFTER (10), DURATION
# (10s), SESSION_USERS (10), MSGS (3), WORK (/var/tmp/agua-logins: agua's
# data), MEMORY_LIMIT (agua's memory_limit; default: agua's own default),
# PROFILE (1: agua serve -memprofile, a heap profile per step in OUT_DIR),
# DOVECOT_AUTH_CACHE (1: Dovecot's auth_cache on, 10M and 5 min, so that its
# repeat logins skip the hash too; default off, Dovecot's own default),
# SMOKE (1: USERS=1000 BURST=200 BURST_SECONDS=4 REPEAT_USERS=20 SETTLE=5
# AFTER=5 DURATION=4s, unless set; the summary says SMOKE).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/compare/results/logins-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then
  : "${USERS:=1000}" "${BURST:=200}" "${BURST_SECONDS:=4}" "${REPEAT_USERS:=20}" "${SETTLE:=5}" "${AFTER:=5}" "${DURATION:=4s}"
fi
users=${USERS:-10000}
burst=${BURST:-1000}
burst_s=${BURST_SECONDS:-10}
repeat_users=${REPEAT_USERS:-100}
settle=${SETTLE:-30}
after=${AFTER:-10}
dur=${DURATION:-10s}
session_users=${SESSION_USERS:-10}
msgs=${MSGS:-3}
work=${WORK:-/var/tmp/agua-logins}
pd="$root/compare/postfix-dovecot.sh"
pass='logins bench password'
domain=example.test
polls=$((burst / repeat_users))
rate=$(((burst + burst_s - 1) / burst_s))
mailboxes=$burst
[ "$mailboxes" -ge "$session_users" ] || mailboxes=$session_users
[ "$mailboxes" -le "$users" ] || { echo "BURST ($burst) and SESSION_USERS ($session_users) must not exceed USERS ($users)" >&2; exit 2; }

AG_SMTP=127.0.0.1:3825 AG_POP3=127.0.0.1:3810 AG_IMAP=127.0.0.1:3843
DC_POP3=127.0.0.1:${DC_POP3_PORT:-2111} DC_IMAP=127.0.0.1:${DC_IMAP_PORT:-2144}
VMAIL=${VMAIL:-/var/lib/agua-bench/vmail}

[ "$(id -u)" = 0 ] || { echo "run as root (Dovecot)" >&2; exit 1; }
for c in python3 go; do command -v "$c" >/dev/null || { echo "$c not found" >&2; exit 1; }; done

agua=$work/agua
cfg=$work/agua.toml
agua_pid=
agua_addrs="$AG_POP3 $AG_SMTP $AG_IMAP" # start_agua waits for POP3
wait_tries=300
step=
# shellcheck source=compare/lib.sh
. "$root/compare/lib.sh"
# start_step: start_agua, with a heap profile of the step with PROFILE=1.
start_step() {
  local prof=()
  [ "${PROFILE:-0}" = 1 ] && prof=(-memprofile "$out/heap-$step.pprof")
  start_agua "$cfg" "${prof[@]}"
}
cleanup() {
  stop_agua
  stop_postfix_dovecot >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dovecot_pid() { cat /run/dovecot-agua-bench/master.pid; }
# A fresh Dovecot before each of its measured steps, as agua gets a fresh
# process: an auth backlog left by a burst it could not keep up with
# (clients that gave up) would slow the next step. postfix-dovecot.sh
# stops and starts its Postfix with it.
restart_dovecot() {
  "$pd" stop >/dev/null 2>&1 || true
  "$pd" start >/dev/null
  wait_port "$DC_POP3"; wait_port "$DC_IMAP"
  sleep 2
}
mem() { python3 "$root/compare/proctree.py" mem "$1"; }
# results NAME JSON: one line of OUT_DIR/results.jsonl
results() { python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "data": json.loads(sys.argv[2])}))' "$1" "$2" >> "$out/results.jsonl"; }

setup() {
  build_agua
  rm -rf "$work/agua-data"
  mkdir -p "$work/agua-data"
  local mlline=""
  [ -z "${MEMORY_LIMIT:-}" ] || mlline="memory_limit = \"$MEMORY_LIMIT\""
  cat > "$cfg" <<EOF
# agua under compare/logins.sh: defaults, ports of its own.
data_dir = "$work/agua-data"
$mlline
[log]
level = "warn"
[accounts]
demo = false
[smtp]
listen = ["$AG_SMTP"]
submission_listen = []
submissions_listen = []
[pop3]
listen = ["$AG_POP3"]
tls_listen = []
[imap]
listen = ["$AG_IMAP"]
tls_listen = []
[admin]
listen = ""
[auth]
enabled = false
EOF
  "$agua" domain add "$domain" -config "$cfg" >/dev/null
  log "$users users sharing one argon2id hash (agua user hash, agua user import)"
  local hash t0 t1
  hash=$(printf '%s\n' "$pass" | "$agua" user hash -config "$cfg")
  python3 -c 'import sys; n, d, h = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.stdout.write("".join(f"user{i}@{d}:{{ARGON2ID}}{h}\n" for i in range(n)))' "$users" "$domain" "$hash" > "$work/users.passwd"
  t0=$(date +%s.%N)
  "$agua" user import "$work/users.passwd" -config "$cfg" >&2
  t1=$(date +%s.%N)
  results import "{\"users\": $users, \"seconds\": $(python3 -c "print(round($t1 - $t0, 2))")}"

  log "Dovecot (compare/postfix-dovecot.sh) with the same $users users and hash"
  "$pd" install >/dev/null
  "$pd" stop
  local names
  names=$(seq -f "user%g" 0 $((users - 1)) | tr '\n' ' ')
  # Room for a login process per client of the burst, so that Dovecot
  # serves every one rather than refuse them ("Connection queue full").
  DC_AUTH_CACHE=${DOVECOT_AUTH_CACHE:-0} DC_LOGIN_LIMIT=$((burst > 100 ? burst + 10 : 100)) USERS="$names" PASS_HASH="{ARGON2ID}$hash" "$pd" configure >/dev/null
  rm -rf "${VMAIL:?}/$domain"/*
  "$pd" start

  step=fill
  start_step
  log "fill $mailboxes mailboxes with $msgs messages each (agua over SMTP; the same files into Dovecot's Maildirs)"
  "$agua" bench -quiet -json -target "$AG_SMTP" -legit "$mailboxes" -sessions 1 -per-session "$msgs" -size 1024 \
    -legit-rate 500 -rcpt "user%d@$domain" -pid 0 -duration 300s > "$out/fill.json"
  stop_agua
  local n
  n=$(python3 - "$work/agua-data/mail/$domain" "$VMAIL/$domain" "$mailboxes" <<'PY'
import os, shutil, sys
src, dst, boxes = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = 0
for i in range(boxes):
    for d in ("tmp", "new", "cur"):
        os.makedirs(f"{dst}/user{i}/{d}", exist_ok=True)
    for d in ("new", "cur"):
        p = f"{src}/user{i}/{d}"
        for name in os.listdir(p) if os.path.isdir(p) else []:
            shutil.copyfile(f"{p}/{name}", f"{dst}/user{i}/new/{name.split(':')[0]}")
            n += 1
print(n)
PY
)
  chown -R vmail:vmail "$VMAIL/$domain"
  [ "$n" -ge $((mailboxes * msgs)) ] || { echo "only $n of $((mailboxes * msgs)) messages were delivered to agua: see $out/fill.json" >&2; exit 1; }
  results fill "{\"mailboxes\": $mailboxes, \"messages\": $n}"

  {
    [ "$smoke" = 1 ] && echo "SMOKE RUN: small counts on a shared machine, to prove the script works; not figures to publish"
    echo "date: $(date -u '+%F %T UTC')"
    echo "nproc: $(nproc); cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
    echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB total, " $7 " MiB available"}')"
    echo "kernel: $(uname -srm)"
    echo "go: $(go version)"
    echo "agua: $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- . || echo ' (+ uncommitted changes)')${MEMORY_LIMIT:+, memory_limit $MEMORY_LIMIT}"
    echo "dovecot: $(dovecot --version) (Debian $(dpkg-query -W -f '${Version}' dovecot-core)), auth_cache $([ "${DOVECOT_AUTH_CACHE:-0}" = 1 ] && echo 'on (10M, 5 min)' || echo 'off (its default)'), login process_limit $((burst > 100 ? burst + 10 : 100))"
    echo "users: $users; burst: $burst POP3 logins at $rate/s (repeat: $repeat_users users x $polls; distinct: $burst users); settle ${settle}s, after ${after}s; rate runs: $session_users clients, $dur"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } > "$out/machine.txt"
  cat "$out/machine.txt" >&2
}

idle() {
  step=idle
  restart_dovecot
  start_step
  log "idle: settle ${settle}s"
  sleep "$settle"
  results idle_start "{\"agua\": $(mem "$agua_pid"), \"dovecot\": $(mem "$(dovecot_pid)")}"
  log "idle: one POP3 login of each of 10 users, settle ${settle}s"
  "$agua" bench -quiet -json -proto pop3 -target "$AG_POP3" -legit 10 -sessions 1 -user "user%d@$domain" -pass "$pass" -pid 0 -duration 120s > "$out/idle-logins-agua.json"
  "$agua" bench -quiet -json -proto pop3 -target "$DC_POP3" -legit 10 -sessions 1 -user "user%d@$domain" -pass "$pass" -pid 0 -duration 120s > "$out/idle-logins-dovecot.json"
  sleep "$settle"
  results idle_after_logins "{\"agua\": $(mem "$agua_pid"), \"dovecot\": $(mem "$(dovecot_pid)")}"
  stop_agua
}

# burst_one SERVER TARGET TREE_PID VARIANT CLIENTS SESSIONS
burst_one() {
  local server=$1 target=$2 tree=$3 variant=$4 clients=$5 sessions=$6 s t0 t1
  log "burst $variant on $server: $clients clients x $sessions POP3 logins at $rate/s"
  python3 "$root/compare/proctree.py" "$tree" 0.2 > "$out/burst-$variant-$server.proc.json" &
  s=$!
  t0=$(date +%s.%N)
  "$agua" bench -quiet -json -proto pop3 -target "$target" -legit "$clients" -sessions "$sessions" -legit-rate "$rate" \
    -user "user%d@$domain" -pass "$pass" -pid 0 -duration 600s > "$out/burst-$variant-$server.json" || true
  t1=$(date +%s.%N)
  local at_end
  at_end=$(mem "$tree")
  sleep "$after"
  kill "$s"; wait "$s" || true
  results "burst_${variant}_$server" "{\"bench\": $(cat "$out/burst-$variant-$server.json" | python3 -c 'import json,sys; l=json.load(sys.stdin)["legit"]; print(json.dumps({k: l.get(k) for k in ("sessions","ok","sessions_per_s","p50","p99","max","failures")}))'),
    \"seconds\": $(python3 -c "print(round($t1 - $t0, 2))"), \"peak\": $(cat "$out/burst-$variant-$server.proc.json"), \"at_end\": $at_end, \"after\": $(mem "$tree")}"
}

burst() {
  for v in repeat distinct; do
    local clients=$repeat_users sessions=$polls
    [ $v = distinct ] && { clients=$burst; sessions=1; }
    step=burst-$v
    start_step
    sleep 2
    burst_one agua "$AG_POP3" "$agua_pid" $v "$clients" "$sessions"
    stop_agua
    restart_dovecot
    burst_one dovecot "$DC_POP3" "$(dovecot_pid)" $v "$clients" "$sessions"
    sleep 2
  done
}

rate() {
  step=rate
  start_step
  local p a d s srv
  for p in pop3 imap; do
    [ $p = pop3 ] && { a=$AG_POP3; d=$DC_POP3; } || { a=$AG_IMAP; d=$DC_IMAP; }
    log "rate $p: $session_users clients, $dur each server"
    python3 "$root/compare/proctree.py" "$agua_pid" > "$out/rate-$p-agua.proc.json" &
    s=$!
    "$agua" bench -quiet -json -proto $p -target "$a" -legit "$session_users" -user "user%d@$domain" -pass "$pass" -duration "$dur" -pid 0 > "$out/rate-$p-agua.json" || true
    kill "$s"; wait "$s" || true
    restart_dovecot
    python3 "$root/compare/proctree.py" "$(dovecot_pid)" > "$out/rate-$p-dovecot.proc.json" &
    s=$!
    "$agua" bench -quiet -json -proto $p -target "$d" -legit "$session_users" -user "user%d@$domain" -pass "$pass" -duration "$dur" -pid 0 > "$out/rate-$p-dovecot.json" || true
    kill "$s"; wait "$s" || true
    for srv in agua dovecot; do
      results "rate_${p}_$srv" "{\"bench\": $(python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["legit"]; print(json.dumps({k: l.get(k) for k in ("sessions","ok","sessions_per_s","messages","p50","p99","failures")}))' "$out/rate-$p-$srv.json"), \"proc\": $(cat "$out/rate-$p-$srv.proc.json")}"
    done
    sleep 2
  done
  stop_agua
}

: > "$out/results.jsonl"
setup
for fn in ${STEPS:-idle burst rate}; do "$fn"; done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine.txt"
python3 "$root/compare/logins-summary.py" "$out" "$users" "$smoke"
cat "$out/summary.md"
log "done: $out/summary.md"
