# shellcheck shell=bash disable=SC2154 # root, out, agua, cfg, agua_addrs: set by the script that sources this
# Helpers the compare/ scripts share; each sources this file after setting
#   root  the agua tree (the folder above compare/)
#   out   where results and agua.log go
#   agua  the agua binary, cfg its default config
# and, for start_agua, agua_addrs (see there). Sourcing it runs nothing.

log() { echo "== $(date -u +%T) $*" >&2; }

# busy ADDR: something accepts TCP connections on host:port ADDR.
busy() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

# wait_port ADDR: back once ADDR accepts connections; after $wait_tries
# tenths of a second (100 unless the script sets it) it says so and fails.
wait_port() {
  for _ in $(seq "${wait_tries:-100}"); do busy "$1" && return 0; sleep 0.1; done
  echo "nothing on $1" >&2
  return 1
}

# build_agua: go build ./cmd/agua into $agua.
build_agua() {
  log "build agua ($(git -C "$root" rev-parse --short HEAD))"
  mkdir -p "$(dirname "$agua")"
  (cd "$root" && go build -o "$agua" ./cmd/agua)
}

# serve_agua CONFIG LOG [SERVE_ARGS...]: `agua serve` in the background with
# room for 20,000 open files, its output appended to LOG; serve_pid is its
# pid. It does not wait for the listeners.
serve_agua() {
  local c=$1 l=$2
  shift 2
  (ulimit -n 20000; exec "$agua" serve -config "$c" "$@" >> "$l" 2>&1) &
  serve_pid=$!
}

# start_agua [CONFIG [SERVE_ARGS...]]: the script's agua (CONFIG: $cfg),
# output into $out/agua.log. Every address of agua_addrs (space-separated)
# must be free first, or the script exits; start_agua returns once the
# first one answers and agua is still alive. Sets agua_pid, and writes it
# to $agua_pidfile if the script sets that.
start_agua() {
  local c=${1:-$cfg} a
  [ $# = 0 ] || shift
  for a in $agua_addrs; do
    if busy "$a"; then echo "something already listens on $a: stop it first" >&2; exit 1; fi
  done
  serve_agua "$c" "$out/agua.log" "$@"
  agua_pid=$serve_pid
  [ -z "${agua_pidfile:-}" ] || echo "$agua_pid" > "$agua_pidfile"
  wait_port "${agua_addrs%% *}"
  kill -0 "$agua_pid" 2>/dev/null || { echo "agua did not start: see $out/agua.log" >&2; exit 1; }
}

# stop_pid PID: SIGINT (agua's graceful stop) to a child of this shell, and
# wait for it; nothing if PID is empty or gone.
stop_pid() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
  kill -INT "$1"
  wait "$1" 2>/dev/null || true
}

# stop_agua: stop_pid of the agua start_agua started.
stop_agua() {
  stop_pid "${agua_pid:-}"
  agua_pid=
}

# stop_postfix_dovecot: compare/postfix-dovecot.sh stop, unless
# KEEP_RUNNING=1 asks to leave Postfix and Dovecot running.
stop_postfix_dovecot() {
  [ "${KEEP_RUNNING:-0}" = 1 ] || "$root/compare/postfix-dovecot.sh" stop || true
}
