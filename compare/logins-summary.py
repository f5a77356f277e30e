#!/usr/bin/env python3
"""Summarise a compare/logins.sh run: OUT/results.jsonl -> OUT/logins.json
and OUT/summary.md, with the ratios against issue 15's goals.

    compare/logins-summary.py OUT_DIR USERS SMOKE(0|1)
"""
import json, os, sys

out, users, smoke = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
res = {}
for line in open(os.path.join(out, "results.jsonl")):
    r = json.loads(line)
    res[r["name"]] = r["data"]
machine = open(os.path.join(out, "machine.txt")).read().strip()
goals = {}


def f(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


lines = ["# Logins and memory: agua vs Dovecot (compare/logins.sh)", ""]
if smoke:
    lines += ["**SMOKE RUN** — small counts on a shared, loaded machine, only to prove the script works end to end. "
              "These figures are not the goals' measurement.", ""]
lines += ["```", machine, "```", ""]

if "import" in res:
    i = res["import"]
    lines += [f"Setup: {i['users']} users imported with `agua user import` in {i['seconds']} s.", ""]

# Idle.
if "idle_start" in res:
    a0, a1 = res["idle_start"], res.get("idle_after_logins", {})
    lines += [f"## Idle, {users} users", "",
              "| when | agua RSS MB (anonymous) | Dovecot PSS MB (anonymous; RSS, processes) |", "|---|---|---|"]
    for name, r in (("after start + settle", a0), ("after 10 logins + settle", a1)):
        if r:
            a, d = r["agua"], r["dovecot"]
            lines.append(f"| {name} | {f(a['rss_mb'])} ({f(a.get('pss_anon_mb'))}) | "
                         f"{f(d['pss_mb'])} ({f(d.get('pss_anon_mb'))}; {f(d['rss_mb'])}, {d['procs']}) |")
    worst = max(a0["agua"]["rss_mb"], a1.get("agua", {}).get("rss_mb", 0))
    goals["idle agua RSS <= 50 MB" + ("" if users >= 10000 else f" (goal at 10,000 users; this run {users})")] = (
        f"{worst:.1f} MB", worst <= 50)
    lines.append("")

# Bursts.
bursts = [(v, res.get(f"burst_{v}_agua"), res.get(f"burst_{v}_dovecot")) for v in ("repeat", "distinct")]
if any(a for _, a, _ in bursts):
    lines += ["## Burst of POP3 logins from strangers", "",
              "| variant | server | sessions ok/all | seconds | sessions/s | p99 | peak MB | at end MB | after MB (anonymous) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v, a, d in bursts:
        for name, r, key in (("agua (RSS)", a, "rss"), ("Dovecot (PSS)", d, "pss")):
            if not r:
                continue
            b = r["bench"]
            p99 = b.get("p99") or 0
            lines.append(f"| {v} | {name} | {b['ok']}/{b['sessions']} | {r['seconds']} | {f(b['sessions_per_s'])} | "
                         f"{p99 / 1e6:.0f} ms | {f(r['peak'][key + '_max_mb'])} | {f(r['at_end'][key + '_mb'])} | "
                         f"{f(r['after'][key + '_mb'])} ({f(r['after'].get('pss_anon_mb'))}) |")
        if a and d:
            for when, ak, dk in (("peak", a["peak"]["rss_max_mb"], d["peak"]["pss_max_mb"]),
                                 ("at end", a["at_end"]["rss_mb"], d["at_end"]["pss_mb"]),
                                 ("after", a["after"]["rss_mb"], d["after"]["pss_mb"])):
                ratio = ak / dk if dk else None
                goals[f"burst {v}, {when}: agua RSS / Dovecot PSS <= 2"] = (f(ratio, 2) + "x", ratio is not None and ratio <= 2)
    fails = [f"{v} {s}: {r['bench']['failures']}" for v, a, d in bursts for s, r in (("agua", a), ("dovecot", d))
             if r and r["bench"].get("failures")]
    if fails:
        lines += ["", "Failures: " + "; ".join(fails)]
    lines.append("")

# Sessions/s.
rates = [(p, res.get(f"rate_{p}_agua"), res.get(f"rate_{p}_dovecot")) for p in ("pop3", "imap")]
if any(a for _, a, _ in rates):
    lines += ["## Sessions/s, repeat logins, same hash", "",
              "| protocol | agua sessions/s | Dovecot sessions/s | agua/Dovecot | agua p99 | Dovecot p99 | agua CPU cores | Dovecot CPU cores |",
              "|---|---|---|---|---|---|---|---|"]
    for p, a, d in rates:
        if not (a and d):
            continue
        ar, dr = a["bench"]["sessions_per_s"], d["bench"]["sessions_per_s"]
        ratio = ar / dr if dr else None
        lines.append(f"| {p} | {f(ar)} | {f(dr)} | {f(ratio, 2)}x | {(a['bench'].get('p99') or 0) / 1e6:.0f} ms | "
                     f"{(d['bench'].get('p99') or 0) / 1e6:.0f} ms | {a['proc']['cpu_cores']} | {d['proc']['cpu_cores']} |")
        goals[f"{p} sessions/s: agua / Dovecot >= 3"] = (f(ratio, 2) + "x", ratio is not None and ratio >= 3)
        for s, r in (("agua", a), ("dovecot", d)):
            if r["bench"].get("failures"):
                lines.append(f"\n{p} {s} failures: {r['bench']['failures']}")
    lines.append("")

lines += ["RSS and PSS count the pages of the programs' files that are mapped (agua: its one binary, "
          "about 20 MB of it; Dovecot: its binaries and libraries, shared by its processes) as well as "
          "anonymous memory (heap, stacks); for agua, one process, RSS = PSS.", ""]
lines += ["## Against issue 15's goals" + (" (SMOKE: not the measurement)" if smoke else ""), "",
          "| goal | this run | met |", "|---|---|---|"]
for g, (v, ok) in goals.items():
    lines.append(f"| {g} | {v} | {'yes' if ok else 'no'} |")
lines.append("")

json.dump({"smoke": smoke, "machine": machine, "results": res,
           "goals": {g: {"value": v, "met": ok} for g, (v, ok) in goals.items()}},
          open(os.path.join(out, "logins.json"), "w"), indent=2)
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines))
