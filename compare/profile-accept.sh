#!/usr/bin/env bash
# Where agua's durable accept path spends its time and its system calls
# (issue 15): smtp-source against `agua serve` in a temporary folder, with
#
#   profile  the Go CPU, block and mutex profiles of the run, printed as
#            top lists (shares of the run, valid on a busy machine too)
#   strace   `strace -c -f` on the server for the run: system calls per
#            accepted message (independent of load)
#
#   MODE=profile compare/profile-accept.sh [OUT_DIR]
#   MODE=strace COUNT=1000 compare/profile-accept.sh
#
# Environment: MODE (profile), COUNT (4000 messages), SESSIONS (20), SIZE
# (2048 bytes), ADDR (127.0.0.1:4725), SYNC (syncfs: [store] sync),
# WORK (a new folder under /tmp, removed at the end unless KEEP=1).
#
# smtp-source connects from 127.0.0.1, which the default config allowlists
# (as in compare/compare.sh): the shield's per-client work is skipped and
# so is not in these figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${MODE:-profile}
out=${1:-$root/compare/results/profile-$mode-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
count=${COUNT:-4000}
sessions=${SESSIONS:-20}
size=${SIZE:-2048}
addr=${ADDR:-127.0.0.1:4725}
work=${WORK:-$(mktemp -d /tmp/agua-profile.XXXXXX)}
for c in smtp-source go; do
  command -v "$c" >/dev/null || { echo "$c not found (Debian: apt-get install postfix golang)" >&2; exit 1; }
done
[ "$mode" != strace ] || command -v strace >/dev/null || { echo "strace not found (apt-get install strace)" >&2; exit 1; }

pid=
cleanup() {
  stop_pid "$pid"
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

agua=$work/agua
cfg=$work/agua.toml
# shellcheck source=compare/lib.sh
. "$root/compare/lib.sh"
(cd "$root" && go build -o "$agua" ./cmd/agua)
cat > "$cfg" <<EOF
# compare/profile-accept.sh: defaults, ports of its own, no sender checks
# (as compare/compare.sh).
data_dir = "$work/data"
[log]
level = "warn"
[accounts]
demo = false
[store]
sync = "${SYNC:-syncfs}"
[smtp]
listen = ["$addr"]
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
echo 'profile password' | "$agua" user add demo@example.test -config "$cfg" >/dev/null

source_run() {
  smtp-source -s "$sessions" -l "$size" -m "$count" -f bench@bench.example -t demo@example.test "$addr"
}

case $mode in
profile)
  "$agua" serve -config "$cfg" -cpuprofile "$out/cpu.pprof" -blockprofile "$out/block.pprof" -mutexprofile "$out/mutex.pprof" 2>> "$out/agua.log" &
  pid=$!
  wait_port "$addr"
  t0=$(date +%s.%N)
  source_run
  t1=$(date +%s.%N)
  kill -INT "$pid"; wait "$pid" || true; pid=
  echo "$count messages in $(python3 -c "print(round($t1-$t0, 2))") s (on this machine, now: load average $(cut -d' ' -f1-3 /proc/loadavg))" | tee "$out/run.txt"
  for p in cpu block mutex; do
    go tool pprof -top -nodecount=40 "$agua" "$out/$p.pprof" > "$out/$p.top.txt" 2>/dev/null || true
    go tool pprof -top -cum -nodecount=60 "$agua" "$out/$p.pprof" > "$out/$p.cum.txt" 2>/dev/null || true
  done
  echo "profiles and their top lists in $out" >&2
  ;;
strace)
  "$agua" serve -config "$cfg" 2>> "$out/agua.log" &
  pid=$!
  wait_port "$addr"
  strace -c -f -o "$out/strace.txt" -p "$pid" &
  st=$!
  sleep 1 # strace attaches to every thread
  source_run
  kill -INT "$st"; wait "$st" || true
  kill -INT "$pid"; wait "$pid" || true; pid=
  python3 - "$out/strace.txt" "$count" <<'PY' | tee "$out/syscalls-per-message.txt"
import sys
count = int(sys.argv[2])
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls = int(f[3])
        rows.append((calls, f[-1]))
rows.sort(reverse=True)
total = sum(c for c, _ in rows)
print(f"{total / count:.1f} system calls per message ({total} for {count} messages)")
for c, name in rows:
    if c / count >= 0.05:
        print(f"  {name:16} {c / count:6.2f}")
PY
  ;;
*) echo "MODE is profile or strace" >&2; exit 1 ;;
esac
