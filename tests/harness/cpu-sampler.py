#!/usr/bin/env python3
"""How busy the machine is with work that is not the benchmarks'.

run-bench.sh starts this next to the benchmarks. Every INTERVAL seconds it
appends one line to OUT:

    <monotonic seconds> <CPU seconds busy> <of ours> <busy at lowered priority> <of ours>

all counted since it started ("lowered priority": processes with a
positive nice value, which give way to the benchmarks). "Ours" is every process descended from
ROOT_PID (run-bench.sh's own tree: the harness's Redis and PostgreSQL, the
benchmarks, the stacks they start), plus any process whose command line
holds MARKER (the run's temporary directory: a PostgreSQL or nginx that
daemonized out of the tree still names its data or config there). The
difference between two lines, divided by the time between them, is how
many cores other work kept busy meanwhile.

Approximate by design: a process of ours that lives less than one interval
is not seen (its CPU counts as other work), and one that exits loses its
CPU since the last sample. Both err towards calling the machine busy.

    cpu-sampler.py ROOT_PID MARKER OUT [INTERVAL]
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds():
    """(CPU seconds busy, of which niced) of the whole machine."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    # user nice system idle iowait irq softirq steal
    values = [int(v) for v in fields[:8]]
    return (sum(values) - values[3] - values[4]) / TICK, values[1] / TICK


def processes():
    """pid -> (ppid, start time, CPU seconds, niced) for every live process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
        # nice 19, starttime 22
        out[int(name)] = (int(rest[1]), rest[19], (int(rest[11]) + int(rest[12])) / TICK,
                          int(rest[16]) > 0)
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def main():
    root, marker, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    marked = {}  # (pid, start) -> whether its command line holds the marker
    first = {}   # (pid, start) -> CPU seconds when first seen, for processes older than us
    last = {}    # (pid, start) -> CPU seconds when last seen, for processes of ours
    niced = set()  # (pid, start) of ours that run niced
    t0 = time.monotonic()
    busy0, nice0 = busy_seconds()
    started = True
    with open(out, "a") as f:
        while True:
            procs = processes()
            ours = {}

            def is_ours(pid, depth=0):
                if pid in ours:
                    return ours[pid]
                if pid not in procs or depth > 64:
                    return False
                ppid, start = procs[pid][0], procs[pid][1]
                key = (pid, start)
                if key not in marked:
                    marked[key] = marker in cmdline(pid)
                result = pid == root or marked[key] or (ppid > 1 and is_ours(ppid, depth + 1))
                ours[pid] = result
                return result

            for pid, (_, start, cpu, nice) in procs.items():
                if not is_ours(pid):
                    continue
                key = (pid, start)
                if started:
                    first[key] = cpu
                last[key] = cpu - first.get(key, 0.0)
                if nice:
                    niced.add(key)
            started = False
            busy, nice = busy_seconds()
            ours_nice = sum(v for k, v in last.items() if k in niced)
            f.write(f"{time.monotonic() - t0:.3f} {busy - busy0:.2f} {sum(last.values()):.2f} "
                    f"{nice - nice0:.2f} {ours_nice:.2f}\n")
            f.flush()
            time.sleep(interval)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
