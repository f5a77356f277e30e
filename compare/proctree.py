#!/usr/bin/env python3
"""Sample a server's whole process tree from /proc until SIGTERM/SIGINT,
then print one JSON object: peak RSS and PSS summed over the tree, peak
process count, and the CPU seconds the tree used while sampled.

    compare/proctree.py PID [INTERVAL_S] > out.json &  ...  kill $!
    compare/proctree.py cpu PID[,PID]  # the tree's (trees') CPU seconds so far, once
    compare/proctree.py mem PID        # the tree's RSS, PSS and anonymous PSS now, once (JSON)

For a one-process server (agua) RSS and PSS are about equal; for
multi-process servers (Postfix, Dovecot) the RSS sum counts shared pages
(libraries, shared memory) once per process, so PSS is the fair figure.
CPU = the root's own and reaped children's time, plus the live
descendants' own time (children reaped by a non-root parent may be
missed; Postfix and Dovecot reap their services in the master).
"""
import json, os, signal, sys, time

TICK = os.sysconf("SC_CLK_TCK")


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root):
    kids = children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def stat_cpu(pid, with_children):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    f = s[s.rindex(")") + 2:].split()
    # fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    t = int(f[11]) + int(f[12])
    if with_children:
        t += int(f[13]) + int(f[14])
    return t / TICK


def mem_kb(pid, rss_key="Rss:"):
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(rss_key):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def sample(root):
    cpu = rss = pss = n = 0
    for p in tree(root):
        try:
            cpu += stat_cpu(p, p == root)
        except OSError:
            continue
        r, q = mem_kb(p)
        rss += r
        pss += q
        n += 1
    return cpu, rss, pss, n


def main():
    if sys.argv[1] == "cpu":  # PID[,PID...]: the trees' CPU seconds summed
        print(round(sum(sample(int(p))[0] for p in sys.argv[2].split(",")), 2))
        return
    if sys.argv[1] == "mem":  # PID: the tree's memory now
        _, rss, pss, n = sample(int(sys.argv[2]))
        anon = sum(mem_kb(p, "Pss_Anon:")[0] for p in tree(int(sys.argv[2])))
        print(json.dumps({"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1),
                          "pss_anon_mb": round(anon / 1024, 1), "procs": n}))
        return
    root = int(sys.argv[1])
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    t0 = time.monotonic()
    cpu0, rss, pss, n = sample(root)
    peak = {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "procs": n}
    cpu = cpu0
    while not stop:
        time.sleep(interval)
        if not os.path.exists(f"/proc/{root}"):
            break  # the server is gone: report what was seen
        c, rss, pss, n = sample(root)
        cpu = max(cpu, c)
        peak["rss_mb"] = max(peak["rss_mb"], rss / 1024)
        peak["pss_mb"] = max(peak["pss_mb"], pss / 1024)
        peak["procs"] = max(peak["procs"], n)
    if os.path.exists(f"/proc/{root}"):
        cpu = max(cpu, sample(root)[0])  # up to the stop, not the last tick
    el = time.monotonic() - t0
    out = {"pid": root, "seconds": round(el, 2), "cpu_s": round(cpu - cpu0, 2),
           "cpu_cores": round((cpu - cpu0) / el, 2) if el > 0 else 0,
           "rss_max_mb": round(peak["rss_mb"], 1), "pss_max_mb": round(peak["pss_mb"], 1),
           "procs_max": peak["procs"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
