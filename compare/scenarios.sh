#!/usr/bin/env bash
# Runs the legitimate load alone, then under each attack scenario, against
# one SMTP target, and writes one JSON report per run into OUT_DIR.
#
#   compare/scenarios.sh LABEL SMTP_ADDR [TLS_ADDR] [OUT_DIR]
#
# Environment: AGUA (agua binary, default: go build), DURATION (10s),
# LEGIT (10), ATTACK_CONNS (200), SCENARIOS,
# BOTNETS (the attackers' prefixes, each scenario is run once per prefix:
# default "127.66.0.0/16 127.64.0.0/10", a botnet in one /16 and one over 64
# /16s; runs of the second are named SCENARIO-many16; ATTACK_SRC, when set,
# is the only one), LEGIT_POOL (127.128.0.0/9: legitimate clients are
# strangers from this pool, one address per session, half at addresses that
# are the same every run, half at fresh random ones; never 127.0.0.1, which
# agua and Postfix trust; the addresses used are in each NAME.json under
# legit_sources),
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
botnets=${ATTACK_SRC:-${BOTNETS:-127.66.0.0/16 127.64.0.0/10}}
pool=${LEGIT_POOL:-127.128.0.0/9}
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
    -legit "$legit" -legit-pool "$pool" -per-session "$per" -rcpt "$rcpt" -pid "$pid" "$@" > "$out/$name.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); s=r.get("legit_sources",{}); a=r.get("attacks") or [{}]
print("   legit from %s: %d returning (e.g. %s), %d fresh (e.g. %s); attackers from %s" % (s.get("pool") or s.get("given"), s.get("returning_count",0), " ".join(s.get("returning",[])[:3]), s.get("fresh_count",0), " ".join(s.get("fresh",[])[:3]), a[0].get("source","-")))' "$out/$name.json" >&2 || true
  if [ -n "$sampler" ]; then kill "$sampler"; wait "$sampler" || true; fi
  if [ -n "$lo0" ]; then echo "{\"listen_overflows\": $(( $(listen_overflows) - lo0 ))}" > "$out/$name.net.json"; fi
  sleep 2 # let sockets in TIME_WAIT and bans settle between runs
}

run baseline
n=0
for src in $botnets; do
  suffix=; [ $n -gt 0 ] && suffix=-many16; [ $n -gt 1 ] && suffix=-botnet$n
  for s in $scenarios; do
    run "$s$suffix" -attack "$s" -attack-conns "$conns" -attack-src "$src" -attack-rate "${ATTACK_RATE:-0}"
  done
  n=$((n + 1))
done
python3 "$root/compare/summarize.py" "$out"
