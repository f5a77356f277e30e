#!/usr/bin/env python3
"""Summarise the JSON reports of compare/scenarios.sh as a Markdown table.

Where NAME.proc.json (compare/proctree.py) sits next to NAME.json, the
server's memory is its process tree's summed PSS and its CPU use is shown;
otherwise the memory is the RSS `agua bench -pid` sampled."""
import json, os, sys

def ms(ns):
    return f"{ns / 1e6:.1f}"

def main(dirs):
    print("| target | scenario | legit sessions/s | legit msgs/s | legit success | p50 ms | p99 ms | p99 / baseline | max ms | attack attempts/s | attacker outcomes | server mem max MB | server CPU cores | listen overflows |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in dirs:
        label = os.path.basename(os.path.normpath(d))
        names = sorted(f[:-5] for f in os.listdir(d) if f.endswith(".json") and not f.endswith((".proc.json", ".net.json")))
        names.sort(key=lambda n: (n != "baseline", n))
        base_p99 = None
        for n in names:
            r = json.load(open(os.path.join(d, n + ".json")))
            l = r["legit"]
            if n == "baseline":
                base_p99 = l["p99"]
            ratio = f"{l['p99'] / base_p99:.1f}x" if base_p99 else "-"
            atk = r.get("attacks") or []
            rate = f"{atk[0]['attempts_per_s']:.0f}" if atk else "-"
            outs = " ".join(f"{k}={v}" for k, v in sorted((atk[0]["outcomes"] if atk else {}).items()))
            rss = r.get("resources") or {}
            mem, cpu = f"{rss.get('rss_max_mb', 0):.0f}", "-"
            pj = os.path.join(d, n + ".proc.json")
            if os.path.exists(pj):
                try:
                    p = json.load(open(pj))
                    mem = f"{p['pss_max_mb']:.0f} PSS ({p['procs_max']} procs)" if p["procs_max"] > 1 else f"{p['rss_max_mb']:.0f}"
                    cpu = f"{p['cpu_cores']:.2f}"
                except (ValueError, KeyError):
                    pass
            lo = (load(os.path.join(d, n + ".net.json")) or {}).get("listen_overflows", "-")
            print(f"| {label} | {n} | {l['sessions_per_s']:.1f} | {l['messages_per_s']:.1f} | {l['success_pct']:.2f}% | "
                  f"{ms(l['p50'])} | {ms(l['p99'])} | {ratio} | {ms(l['max'])} | {rate} | {outs or '-'} | {mem} | {cpu} | {lo} |")

def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def mem_cpu(base):
    """Server memory and CPU of one run from BASE.proc.json (or BASE.json's -pid sample)."""
    p = load(base + ".proc.json")
    if p:
        mem = f"{p['pss_max_mb']:.0f} PSS ({p['procs_max']} procs)" if p["procs_max"] > 1 else f"{p['rss_max_mb']:.0f}"
        return mem, f"{p['cpu_cores']:.2f}"
    r = (load(base + ".json") or {}).get("resources") or {}
    return (f"{r['rss_max_mb']:.0f}" if r else "-"), "-"


def legit_row(label, base):
    r = load(base + ".json")
    if not r:
        return f"| {label} | (no result) |"
    l = r["legit"]
    fails = " ".join(f"{k}={v}" for k, v in sorted((l.get("failures") or {}).items())) or "-"
    mem, cpu = mem_cpu(base)
    return (f"| {label} | {l['sessions']} | {l['sessions_per_s']:.1f} | {l['messages_per_s']:.1f} | {l['success_pct']:.2f}% | "
            f"{ms(l['p50'])} | {ms(l['p99'])} | {ms(l['max'])} | {fails} | {mem} | {cpu} |")


LEGIT_HEAD = ("| server | sessions | sessions/s | msgs/s | success | p50 ms | p99 ms | max ms | failures | server mem MB | server CPU cores |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")


def attack_row(label, base):
    r = load(base + ".json")
    if not r:
        return f"| {label} | (no result) |"
    l, a = r["legit"], (r.get("attacks") or [{}])[0]
    sep = load(base + ".legit.json")  # legitimate clients run as a process of their own
    if sep:
        l = sep["legit"]
        label += " (legit: separate process)"
    outs = " ".join(f"{k}={v}" for k, v in sorted((a.get("outcomes") or {}).items())) or "-"
    mem, cpu = mem_cpu(base)
    return (f"| {label} | {a.get('attempts', 0)} | {a.get('attempts_per_s', 0):.0f} | {a.get('max_held', 0) or '-'} | {outs} | "
            f"{l['sessions']} | {l['success_pct']:.2f}% | {ms(l['p50'])} | {ms(l['p99'])} | {mem} | {cpu} | "
            f"{(load(base + '.net.json') or {}).get('listen_overflows', '-')} |")


ATTACK_HEAD = ("| server | attempts | attempts/s | max held | attacker outcomes | legit sessions | legit success | legit p50 ms | legit p99 ms | server mem MB | server CPU cores | listen overflows |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|")


def compare(out):
    print("# agua vs Postfix/Dovecot\n")
    print("```")
    print(open(os.path.join(out, "machine.txt")).read().rstrip())
    try:
        loads = [float(l.split()[1]) for l in open(os.path.join(out, "loadavg.txt")) if len(l.split()) >= 2]
        if loads:
            srt = sorted(loads)
            print(f"1-min load average during the runs: min {srt[0]:.2f}, median {srt[len(srt) // 2]:.2f}, max {srt[-1]:.2f} ({len(loads)} samples)")
    except OSError:
        pass
    print("```\n")
    t = os.path.join(out, "throughput")
    if os.path.isdir(t):
        print("## Durable SMTP delivery, 2 KiB messages, 20 sessions\n")
        print("| server | tool | messages | 250s per second | in the final Maildir per second | server mem MB | server CPU cores | server CPU ms per message |")
        print("|---|---|---|---|---|---|---|---|")
        rates = {}
        for name in ("agua", "postfix"):
            r = load(os.path.join(t, f"smtp-source-{name}.json"))
            if r:
                mem, cpu = mem_cpu(os.path.join(t, f"smtp-source-{name}"))
                md = r["accept_per_s"] if name == "agua" else r["in_maildir_per_s"]
                rates[("smtp-source", name)] = r["accept_per_s"]
                err = f" (errors: {'; '.join(r['errors'])})" if r.get("errors") else ""
                pj = load(os.path.join(t, f"smtp-source-{name}.proc.json")) or {}
                per = f"{1000 * pj['cpu_s'] / 2000:.2f}" if pj else "-"
                print(f"| {name} | smtp-source -s 20 | 2000 in {r['accept_s']:.2f} s{err} | {r['accept_per_s']:.0f} | {md:.0f} | {mem} | {cpu} | {per} |")
        drain = (load(os.path.join(t, "postfix-drain.json")) or {}).get("postfix_bench_run_plus_drain_s")
        for name in ("agua", "postfix"):
            r = load(os.path.join(t, name + ".json"))
            if r:
                l = r["legit"]
                mem, cpu = mem_cpu(os.path.join(t, name))
                secs = r["elapsed"] / 1e9
                md = f"{l['messages_per_s']:.0f}"
                if name == "postfix" and drain:
                    md = f"{l['messages'] / drain:.0f} (queue empty {drain - secs:.1f} s after the run)"
                rates[("agua bench", name)] = l["messages_per_s"]
                pj = load(os.path.join(t, name + ".proc.json")) or {}
                per = f"{1000 * pj['cpu_s'] / l['messages']:.2f}" if pj and l["messages"] else "-"
                if name == "postfix":
                    per += " (during the run; delivery continues after it)"
                print(f"| {name} | agua bench -legit 20 | {l['messages']} in {secs:.1f} s, {l['success_pct']:.2f}% ok, p50 {ms(l['p50'])} ms, p99 {ms(l['p99'])} ms | {l['messages_per_s']:.0f} | {md} | {mem} | {cpu} | {per} |")
        for tool in ("smtp-source", "agua bench"):
            a, p = rates.get((tool, "agua")), rates.get((tool, "postfix"))
            if a and p:
                print(f"\n{tool}: agua / Postfix = **{a / p:.1f}x** (250s per second; goal >= 10x: {'met' if a / p >= 10 else 'not met'})", end="")
        print("\n")
    for scd in sorted(x for x in os.listdir(out) if x.startswith("scenarios")):
        sc = os.path.join(out, scd)
        rate = scd[len("scenarios-rate"):] if scd.startswith("scenarios-rate") else ""
        print(f"## Legitimate SMTP clients under attack (compare/scenarios.sh{', ATTACK_RATE=' + rate if rate else ''})\n")
        print("Attackers: " + (f"{rate} attempts/s per scenario" if rate else "as fast as they can (the same simulator, so its own CPU use grows with the server's speed)") + ".\n")
        dirs = [os.path.join(sc, d) for d in ("agua", "postfix") if os.path.isdir(os.path.join(sc, d))]
        main(dirs)
        print()
        print("Goals (legit success 100% and p99 <= 3x the same server's baseline):\n")
        print("| scenario | " + " | ".join(os.path.basename(d) for d in dirs) + " |")
        print("|---|" + "---|" * len(dirs))
        names = sorted({f[:-5] for d in dirs for f in os.listdir(d) if f.endswith(".json") and not f.endswith((".proc.json", ".net.json"))} - {"baseline"})
        for n in names:
            cells = []
            for d in dirs:
                b, r = load(os.path.join(d, "baseline.json")), load(os.path.join(d, n + ".json"))
                if not b or not r:
                    cells.append("-")
                    continue
                l = r["legit"]
                ratio = l["p99"] / b["legit"]["p99"] if b["legit"]["p99"] else float("inf")
                ok = l["success_pct"] >= 100 and ratio <= 3 and l["sessions"] > 0
                cells.append(f"{'met' if ok else 'MISSED'}: {l['success_pct']:.2f}%, p99 {ratio:.1f}x")
            print(f"| {n} | " + " | ".join(cells) + " |")
        print()
    mb = os.path.join(out, "mailbox")
    if os.path.isdir(mb):
        for p, what in (("pop3", "POP3 sessions (USER/PASS + STAT + RETR all 20 + QUIT)"), ("imap", "IMAP sessions (LOGIN + SELECT + FETCH 1:20 BODY.PEEK[] + LOGOUT)")):
            print(f"## {what}, 10 clients, each on its own mailbox of 20 messages\n")
            print(LEGIT_HEAD)
            for s in ("agua", "dovecot"):
                print(legit_row(s, os.path.join(mb, f"{p}-{s}")))
            a, d = load(os.path.join(mb, f"{p}-agua.json")), load(os.path.join(mb, f"{p}-dovecot.json"))
            if a and d and d["legit"]["sessions_per_s"]:
                print(f"\nagua / Dovecot = **{a['legit']['sessions_per_s'] / d['legit']['sessions_per_s']:.1f}x** sessions/s\n")
            else:
                print()
    for title, sub in (("Slowloris: held connections from 127.80.0.0/16 + 5 legit SMTP clients", "slowloris"),
                       ("Denied network (deny 127.81.0.0/16 drop): connection flood", "deny")):
        dd = os.path.join(out, sub)
        if not os.path.isdir(dd):
            continue
        print(f"## {title}\n")
        print(ATTACK_HEAD)
        for f in sorted(x[:-5] for x in os.listdir(dd) if x.endswith(".json") and not x.endswith((".proc.json", ".log.json", ".net.json", ".legit.json")) and x != "agua-status.json"):
            print(attack_row(f, os.path.join(dd, f)))
        for f in sorted(x for x in os.listdir(dd) if x.endswith(".log.json")):
            print(f"\n{f[:-9]}: {open(os.path.join(dd, f)).read().strip()}")
        print()


if __name__ == "__main__":
    if sys.argv[1:2] == ["-compare"]:
        compare(sys.argv[2])
    else:
        main(sys.argv[1:] or ["compare/results"])
