#!/usr/bin/env bash
# Runs the legitimate load alone, then under each attack scenario, against
# one SMTP target, and writes one JSON report per run into OUT_DIR.
#
#   compare/scenarios.sh LABEL SMTP_ADDR [TLS_ADDR] [OUT_DIR]
#
# Environment: AGUA (agua binary, default: go build), DURATION (10s),
# LEGIT (10), ATTACK_CONNS (200), ATTACK_SRC (127.66.0.0/16), SCENARIOS,
# PID (target process for RSS sampling; 0 = none), RCPT, PER_SESSION (1),
# TREE_PID (a server's root process: its whole process tree's RSS, PSS and
# CPU are sampled by compare/proctree.py into NAME.proc.json; for
# multi-process servers such as Postfix), BETWEEN (a command run before each
# run, e.g. "agua unblock -all" so that every scenario starts without the
# previous one's bans), ATTACK_RATE (attempts/s per scenario, 0 = as fast as
# possible). Where nstat(8) exists, the kernel's listen-queue overflows during
# each run (system-wide) go into NAME.net.json.
set -euo pipefail
label=${1:?label}; smtp=${2:?smtp host:port}; tls=${3:-127.0.0.1:2465}
out=${4:-bench/results/$label}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${AGUA:-}" ]; then
  AGUA=$(mktemp -d)/agua
  (cd "$root" && go build -o "$AGUA" ./cmd/agua)
fi
dur=${DURATION:-10s}
legit=${LEGIT:-10}
conns=${ATTACK_CONNS:-200}
src=${ATTACK_SRC:-127.66.0.0/16}
rcpt=${RCPT:-demo@example.test}
pid=${PID:-0}
per=${PER_SESSION:-1}
scenarios=${SCENARIOS:-connect banner slowloris pregreet harvest flood junk http tls}

listen_overflows() { command -v nstat >/dev/null && nstat -az TcpExtListenOverflows | awk '/ListenOverflows/ {print $2}'; }

run() { # name, extra args...
  local name=$1; shift
  echo "== $label: $name" >&2
  if [ -n "${BETWEEN:-}" ]; then eval "$BETWEEN" >/dev/null 2>&1 || true; fi
  local sampler=
  if [ -n "${TREE_PID:-}" ]; then
    python3 "$root/compare/proctree.py" "$TREE_PID" > "$out/$name.proc.json" &
    sampler=$!
  fi
  local lo0
  lo0=$(listen_overflows)
  "$AGUA" bench -quiet -json -target "$smtp" -tls-target "$tls" -duration "$dur" \
    -legit "$legit" -per-session "$per" -rcpt "$rcpt" -pid "$pid" "$@" > "$out/$name.json"
  if [ -n "$sampler" ]; then kill "$sampler"; wait "$sampler" || true; fi
  if [ -n "$lo0" ]; then echo "{\"listen_overflows\": $(( $(listen_overflows) - lo0 ))}" > "$out/$name.net.json"; fi
  sleep 2 # let sockets in TIME_WAIT and bans settle between runs
}

run baseline
for s in $scenarios; do
  run "$s" -attack "$s" -attack-conns "$conns" -attack-src "$src" -attack-rate "${ATTACK_RATE:-0}"
done
python3 "$root/compare/summarize.py" "$out"
