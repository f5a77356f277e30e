#!/usr/bin/env bash
# Kernel offload cost (issue 13 item 5): a denied /16 (127.81.0.0/16, rule
# "deny ... drop") floods agua's SMTP port with connections; agua's own CPU
# (utime+stime from /proc) with [shield.kernel] off, then on. As root (the
# nftables table is made in this network namespace and removed at the end):
#
#   go build -o /tmp/kern/agua ./cmd/agua
#   LEGIT=0 CONNS=2000 compare/kernel-offload.sh false
#   LEGIT=0 CONNS=2000 compare/kernel-offload.sh true
#
# Writes its data folders, configs and bench JSON under /tmp/kern.
set -euo pipefail
k=$1   # true|false
d=/tmp/kern/data-$k
rm -rf "$d"; mkdir -p "$d"
cat > /tmp/kern/agua-$k.toml <<CFG
data_dir = "$d"
[log]
level = "warn"
[accounts]
demo = false
[smtp]
listen = ["127.0.0.1:4525"]
submission_listen = ["127.0.0.1:4587"]
submissions_listen = ["127.0.0.1:4465"]
[pop3]
listen = ["127.0.0.1:4110"]
tls_listen = ["127.0.0.1:4995"]
[imap]
listen = ["127.0.0.1:4143"]
tls_listen = ["127.0.0.1:4993"]
[admin]
listen = ""
[auth]
enabled = false
[shield.kernel]
enabled = $k
CFG
a=/tmp/kern/agua; cfg=/tmp/kern/agua-$k.toml
$a domain add example.test -config $cfg >/dev/null
printf 'pw pw pw\n' | $a user add demo@example.test -config $cfg >/dev/null
echo "deny 127.81.0.0/16 drop" > "$d/shield.rules"
$a serve -config $cfg > /tmp/kern/serve-$k.log 2>&1 &
pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/4525) 2>/dev/null && break; sleep 0.1; done
sleep 2
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
ov() { nstat -az TcpExtListenOverflows | awk '/ListenOverflows/ {print $2}'; }
c0=$(cpu); o0=$(ov); t0=$(date +%s.%N)
$a bench -quiet -json -target 127.0.0.1:4525 -legit ${LEGIT:-5} -attack connect -attack-conns ${CONNS:-200} -attack-src 127.81.0.0/16 -duration 10s -pid 0 > /tmp/kern/bench-$k.json
c1=$(cpu); o1=$(ov); t1=$(date +%s.%N)
$a status -config $cfg > /tmp/kern/status-$k.json 2>&1 || true
kill $pid; wait $pid 2>/dev/null || true
hz=$(getconf CLK_TCK)
python3 - "$k" "$c0" "$c1" "$t0" "$t1" "$hz" "$o0" "$o1" <<'PY'
import json,sys
k,c0,c1,t0,t1,hz,o0,o1=sys.argv[1:]
b=json.load(open(f"/tmp/kern/bench-{k}.json"))
cores=(float(c1)-float(c0))/float(hz)/(float(t1)-float(t0))
print(json.dumps({"kernel":k,"agua_cpu_cores":round(cores,4),"seconds":round(float(t1)-float(t0),1),
  "legit":{x:b["legit"].get(x) for x in ("sessions","success_pct","p50","p99")},
  "attack":{kk:v for kk,v in b.items() if kk.startswith("attack")},
  "listen_overflows":int(o1)-int(o0)}, default=str)[:1500])
PY
