#!/usr/bin/env python3
"""Summarise the JSON reports of bench/scenarios.sh as a Markdown table."""
import json, os, sys

def ms(ns):
    return f"{ns / 1e6:.1f}"

def main(dirs):
    print("| target | scenario | legit sessions/s | legit msgs/s | legit success | p50 ms | p99 ms | max ms | attack attempts/s | attacker outcomes | RSS max MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in dirs:
        label = os.path.basename(os.path.normpath(d))
        names = sorted(f[:-5] for f in os.listdir(d) if f.endswith(".json"))
        names.sort(key=lambda n: (n != "baseline", n))
        for n in names:
            r = json.load(open(os.path.join(d, n + ".json")))
            l = r["legit"]
            atk = r.get("attacks") or []
            rate = f"{atk[0]['attempts_per_s']:.0f}" if atk else "-"
            outs = " ".join(f"{k}={v}" for k, v in sorted((atk[0]["outcomes"] if atk else {}).items()))
            rss = r.get("resources") or {}
            print(f"| {label} | {n} | {l['sessions_per_s']:.1f} | {l['messages_per_s']:.1f} | {l['success_pct']:.2f}% | "
                  f"{ms(l['p50'])} | {ms(l['p99'])} | {ms(l['max'])} | {rate} | {outs or '-'} | {rss.get('rss_max_mb', 0):.0f} |")

if __name__ == "__main__":
    main(sys.argv[1:] or ["bench/results"])
