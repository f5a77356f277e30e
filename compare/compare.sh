#!/usr/bin/env bash
# Side by side: agua against Postfix (SMTP) and Dovecot (POP3, IMAP), on
# this machine, loopback only. Run as root from anywhere:
#
#   DURATION=8s compare/compare.sh [OUT_DIR]
#
# It builds agua, starts it on a data folder and ports of its own (so an
# agua on the default ports is left alone), installs/configures/starts
# Postfix and Dovecot (compare/postfix-dovecot.sh), then runs, against each:
#   throughput  smtp-source (2 KiB, 2000 messages, 20 sessions) and
#               `agua bench -legit 20` (durable 250s per second)
#   scenarios   compare/scenarios.sh: legit SMTP alone, then under each attack
#               (as fast as the attackers can; then at RATE attempts/s)
#   mailbox     10 mailboxes x 20 messages; `agua bench -proto pop3|imap`
#   slowloris   19,000 held connections + 5 legit clients (agua with its
#               default max_connections 1000, then with 20000)
#   deny        connection flood from a denied /16 (action drop)
# and writes OUT_DIR/summary.md (compare/summarize.py -compare). Postfix,
# Dovecot and this agua are stopped at the end (KEEP_RUNNING=1: not).
#
# Environment: DURATION (8s), STEPS ("throughput scenarios scenarios_rate
# mailbox slowloris deny"), RATE (300: attack attempts/s in scenarios_rate), WORK (/var/tmp/agua-bench: agua's data), SCENARIOS (see
# scenarios.sh), SLOWLORIS_CONNS (19000), SLOWLORIS_DURATION (20s).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/compare/results/compare-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${WORK:-/var/tmp/agua-bench}
dur=${DURATION:-8s}
steps=${STEPS:-throughput scenarios scenarios_rate mailbox slowloris deny}
pd="$root/compare/postfix-dovecot.sh"
pass='bench password'
users="demo user0 user1 user2 user3 user4 user5 user6 user7 user8 user9"

# agua's ports: none of its defaults (an agua may already run on those).
AG_SMTP=127.0.0.1:3525 AG_SUB=127.0.0.1:3587 AG_TLS=127.0.0.1:3465
AG_POP3=127.0.0.1:3110 AG_POP3S=127.0.0.1:3995 AG_IMAP=127.0.0.1:3143 AG_IMAPS=127.0.0.1:3993
PF_SMTP=127.0.0.1:2526 PF_TLS=127.0.0.1:2466 DC_POP3=127.0.0.1:2111 DC_IMAP=127.0.0.1:2144
ATTACK_DENIED=127.81.0.0/16   # denied with "drop" in both (shield.rules / postscreen_access_list)
SLOW_SRC=127.80.0.0/16

agua=$work/agua
cfg=$work/agua.toml
agua_pid=
agua_addrs=$AG_SMTP
agua_pidfile=$work/agua.pid
# shellcheck source=compare/lib.sh
. "$root/compare/lib.sh"
cleanup() {
  stop_agua
  kill "${loadavg_pid:-}" 2>/dev/null || true
  stop_postfix_dovecot
}
trap cleanup EXIT

postfix_pid() { tr -d ' \n' < /var/spool/postfix/pid/master.pid; }
dovecot_pid() { cat /run/dovecot-agua-bench/master.pid; }

# bench NAME TREE_PID ARGS...: one agua bench run, JSON into $out/NAME.json,
# the server's process tree sampled into $out/NAME.proc.json.
bench() {
  local name=$1 tree=$2; shift 2
  mkdir -p "$(dirname "$out/$name")"
  log "bench $name"
  python3 "$root/compare/proctree.py" "$tree" > "$out/$name.proc.json" &
  local s=$! lo0
  lo0=$(listen_overflows)
  "$agua" bench -quiet -json "$@" > "$out/$name.json" || true
  kill "$s"; wait "$s" || true
  [ -z "$lo0" ] || echo "{\"listen_overflows\": $(( $(listen_overflows) - lo0 ))}" > "$out/$name.net.json"
}
listen_overflows() { command -v nstat >/dev/null && nstat -az TcpExtListenOverflows | awk '/ListenOverflows/ {print $2}'; }

# Each step gets a fresh agua process (its RSS is the step's own) with no
# bans left from the previous step.
restart_agua() {
  stop_agua
  start_agua "$@"
  "$agua" unblock -all -config "$cfg" >/dev/null 2>&1 || true
}

write_cfg() { # file, smtp.max_connections (1000 is the default)
  cat > "$1" <<EOF
# agua under benchmark (compare/compare.sh): defaults, ports of its own.
data_dir = "$work/agua-data"
[log]
level = "warn"
[accounts]
demo = false
[smtp]
listen = ["$AG_SMTP"]
submission_listen = ["$AG_SUB"]
submissions_listen = ["$AG_TLS"]
max_connections = $2
[pop3]
listen = ["$AG_POP3"]
tls_listen = ["$AG_POP3S"]
[imap]
listen = ["$AG_IMAP"]
tls_listen = ["$AG_IMAPS"]
[admin]
listen = ""
# Postfix as configured here checks no SPF, DKIM or DMARC; neither does
# agua, so both do the same work. (With the checks on and no reachable
# resolver, a stranger's message waits for the DNS timeout at the end of
# DATA; their cost with answers cached is BenchmarkVerify's.)
[auth]
enabled = false
EOF
}

setup() {
  build_agua
  rm -rf "$work/agua-data"
  mkdir -p "$work/agua-data"
  write_cfg "$cfg" 1000
  # The slowloris run is repeated with room for 20,000 connections.
  write_cfg "$work/agua-20k.toml" 20000
  echo "deny $ATTACK_DENIED drop   # compare/compare.sh: the denied-flood run" > "$work/agua-data/shield.rules"
  "$agua" domain add example.test -config "$cfg" >/dev/null
  for u in $users; do printf '%s\n' "$pass" | "$agua" user add "$u@example.test" -config "$cfg" >/dev/null; done
  # Dovecot verifies the very argon2id hash agua stored (same parameters).
  local hash
  hash=$(sqlite3 "$work/agua-data/agua.db" "select password from users where address='demo@example.test'")
  "$pd" install >/dev/null
  "$pd" stop
  USERS="$users" PASS_HASH="{ARGON2ID}$hash" DENY_SRC=$ATTACK_DENIED "$pd" configure
  postsuper -d ALL >/dev/null 2>&1 || true
  rm -rf /var/lib/agua-bench/vmail/example.test/*
  : > /var/log/postfix-agua-bench.log
  "$pd" start
  start_agua
  {
    echo "date: $(date -u '+%F %T UTC')"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
    echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB total, " $7 " MiB available"}')"
    echo "kernel: $(uname -srm)"
    echo "filesystem: $(df -T "$work" | awk 'NR==2 {print $1, $2}') (agua data, Postfix queue and Maildirs: same file system)"
    echo "go: $(go version)"
    echo "agua: $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- . ':!bench' ':!BENCHMARKS.md' || echo ' (+ uncommitted changes in the tree)')"
    echo "postfix: $(postconf -h mail_version) (Debian $(dpkg-query -W -f '${Version}' postfix))"
    echo "dovecot: $(dovecot --version) (Debian $(dpkg-query -W -f '${Version}' dovecot-core))"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } > "$out/machine.txt"
  cat "$out/machine.txt" >&2
}

# smtp-source against PORT, timed; for Postfix also the time until its
# queue is empty (every message in its Maildir).
smtp_source() {
  local name=$1 addr=$2 tree=$3 drain=${4:-0}
  log "smtp-source $name"
  python3 "$root/compare/proctree.py" "$tree" > "$out/throughput/smtp-source-$name.proc.json" &
  local s=$! t0 t1 t2
  t0=$(date +%s.%N)
  smtp-source -c -l 2048 -m 2000 -s 20 -f bench@bench.example -t demo@example.test "$addr" > "$out/throughput/smtp-source-$name.out" 2>&1 || true
  t1=$(date +%s.%N)
  t2=$t1
  if [ "$drain" = 1 ]; then "$pd" fill-wait 600; t2=$(date +%s.%N); fi
  kill "$s"; wait "$s" || true
  python3 - "$name" "$t0" "$t1" "$t2" "$out/throughput/smtp-source-$name.out" > "$out/throughput/smtp-source-$name.json" <<'EOF'
import json, re, sys
name, t0, t1, t2, f = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5]
text = open(f, errors="replace").read()
nums = [int(x) for x in re.findall(r"\d+", text.split("\n")[-1] if text else "")] or [0]
errors = [l for l in text.splitlines() if "smtp-source:" in l]
print(json.dumps({"name": name, "messages": 2000, "accept_s": round(t1 - t0, 3), "in_maildir_s": round(t2 - t0, 3),
                  "accept_per_s": round(2000 / (t1 - t0), 1), "in_maildir_per_s": round(2000 / (t2 - t0), 1),
                  "errors": errors[:5]}))
EOF
}

throughput() {
  restart_agua
  mkdir -p "$out/throughput"
  "$pd" fill-wait 600
  smtp_source agua "$AG_SMTP" "$agua_pid"
  smtp_source postfix "$PF_SMTP" "$(postfix_pid)" 1
  bench throughput/agua "$agua_pid" -target "$AG_SMTP" -legit 20 -duration "$dur" -pid "$agua_pid"
  local t0 t1
  t0=$(date +%s.%N)
  bench throughput/postfix "$(postfix_pid)" -target "$PF_SMTP" -legit 20 -duration "$dur" -pid 0
  "$pd" fill-wait 600
  t1=$(date +%s.%N)
  python3 -c "print('{\"postfix_bench_run_plus_drain_s\": %.2f}' % ($t1 - $t0))" > "$out/throughput/postfix-drain.json"
}

scenarios() {
  "$pd" fill-wait 600
  restart_agua
  PID=$agua_pid TREE_PID=$agua_pid DURATION=$dur AGUA=$agua \
    BETWEEN="'$agua' unblock -all -config '$cfg'" \
    "$root/compare/scenarios.sh" agua "$AG_SMTP" "$AG_TLS" "$out/${SC_DIR:-scenarios}/agua" > /dev/null
  PID=0 TREE_PID=$(postfix_pid) DURATION=$dur AGUA=$agua \
    "$root/compare/scenarios.sh" postfix "$PF_SMTP" "$PF_TLS" "$out/${SC_DIR:-scenarios}/postfix" > /dev/null
  "$pd" fill-wait 600
}

# The same scenarios with the attack held to the same rate against both
# servers (RATE attempts/s per scenario), so that the attack volume and the
# simulator's own CPU use are equal.
scenarios_rate() {
  SC_DIR=scenarios-rate${RATE:-300} ATTACK_RATE=${RATE:-300} scenarios
}

mailbox() {
  restart_agua
  log "fill 10 mailboxes x 20 messages on each"
  "$agua" bench -quiet -target "$AG_SMTP" -legit 10 -sessions 20 -rcpt 'user%d@example.test' -pid 0 -duration 120s > "$out/fill-agua.txt"
  "$agua" bench -quiet -target "$PF_SMTP" -legit 10 -sessions 20 -rcpt 'user%d@example.test' -pid 0 -duration 120s > "$out/fill-postfix.txt"
  "$pd" fill-wait 600
  {
    for u in user0 user9; do
      echo "agua $u: $(find "$work/agua-data/mail/example.test/$u/new" "$work/agua-data/mail/example.test/$u/cur" -type f | wc -l) messages"
      echo "postfix/dovecot $u: $(find /var/lib/agua-bench/vmail/example.test/$u/new /var/lib/agua-bench/vmail/example.test/$u/cur -type f | wc -l) messages"
    done
  } > "$out/fill-counts.txt"
  for p in pop3 imap; do
    local a d
    [ $p = pop3 ] && { a=$AG_POP3; d=$DC_POP3; } || { a=$AG_IMAP; d=$DC_IMAP; }
    bench mailbox/$p-agua "$agua_pid" -proto $p -target "$a" -legit 10 -user 'user%d@example.test' -pass "$pass" -duration "$dur" -pid "$agua_pid"
    sleep 2
    bench mailbox/$p-dovecot "$(dovecot_pid)" -proto $p -target "$d" -legit 10 -user 'user%d@example.test' -pass "$pass" -duration "$dur" -pid 0
    sleep 2
  done
}

# The 19,000 attackers and the 5 legitimate clients run as two processes:
# in one process the legitimate goroutines queue behind 19,000 attacker
# goroutines that redial as fast as they are dropped, and the latency
# measured is then mostly the simulator's own (SLOW_ONE_PROCESS=1 runs the
# single-process form, `agua bench -legit 5 -attack slowloris ...`, too).
slow_one() { # name target tree-pid -pid-arg
  local name=$1 target=$2 tree=$3 pidarg=$4 n=${SLOWLORIS_CONNS:-19000} sd=${SLOWLORIS_DURATION:-20s}
  if [ "${SLOW_ONE_PROCESS:-0}" = 1 ]; then
    bench slowloris/$name-one-process "$tree" -target "$target" -legit 5 -attack slowloris -attack-conns "$n" -attack-src "$SLOW_SRC" -duration "$sd" -pid "$pidarg"
    sleep 5
  fi
  bench slowloris/$name "$tree" -target "$target" -legit 0 -attack slowloris -attack-conns "$n" -attack-src "$SLOW_SRC" -duration "$sd" -pid "$pidarg" &
  local b=$!
  sleep 6
  "$agua" bench -quiet -json -target "$target" -legit 5 -duration 10s -pid 0 > "$out/slowloris/$name.legit.json" || true
  wait "$b" || true
  sleep 5
}

slowloris() {
  mkdir -p "$out/slowloris"
  restart_agua
  slow_one agua "$AG_SMTP" "$agua_pid" "$agua_pid"
  restart_agua "$work/agua-20k.toml"
  slow_one agua-max20000 "$AG_SMTP" "$agua_pid" "$agua_pid"
  restart_agua
  slow_one postfix "$PF_SMTP" "$(postfix_pid)" 0
  "$pd" fill-wait 600
}

deny() {
  restart_agua
  for sc in connect banner; do
    bench deny/$sc-agua "$agua_pid" -target "$AG_SMTP" -legit 5 -attack $sc -attack-conns 50 -attack-src "$ATTACK_DENIED" -duration "$dur" -pid "$agua_pid"
    sleep 2
    local before after
    before=$(grep -c 'DENYLISTED\|BLACKLISTED' /var/log/postfix-agua-bench.log || true)
    bench deny/$sc-postfix "$(postfix_pid)" -target "$PF_SMTP" -legit 5 -attack $sc -attack-conns 50 -attack-src "$ATTACK_DENIED" -duration "$dur" -pid 0
    after=$(grep -c 'DENYLISTED\|BLACKLISTED' /var/log/postfix-agua-bench.log || true)
    echo "{\"postscreen_denylisted\": $((after - before))}" > "$out/deny/$sc-postfix.log.json"
    sleep 2
  done
  "$agua" status -config "$cfg" > "$out/deny/agua-status.json" 2>&1 || true
}

# Load average once a second for the whole comparison.
( while :; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 1; done ) > "$out/loadavg.txt" &
loadavg_pid=$!

setup
for s in $steps; do
  "$s"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine.txt"
python3 "$root/compare/summarize.py" -compare "$out" > "$out/summary.md"
log "done: $out/summary.md"
