#!/usr/bin/env python3
"""Overhead of ``subsecinspect trace`` on a walker-heavy load, in a lab guest.

Boots one guest (kernel ``-k``; 1 GiB RAM + 1 GiB NVDIMM with an fsdax --map=dev namespace,
so that the tracer holds seeded C5 windows), copies this script into it and runs it there
with ``--guest``: the tracer's program is compiled and seeded ONCE, then the load

    ROUNDS x { cat /proc/kpageflags > /dev/null; cat /proc/kpagecount > /dev/null;
               echo 1 > /proc/sys/vm/compact_memory }

runs ``--pairs`` times with the probes attached and with them detached
(:meth:`SubsecTrace.pause` / :meth:`~SubsecTrace.resume`: the same program and maps),
interleaved and in alternating order (on/off, off/on, ...) so that drift of this 2-core
host (other guests) hits both sides alike. Printed: per pair both times and the ratio,
the walker-probe calls and lost events of the traced run; at the end the MEDIAN OF THE
PER-PAIR RATIOS (robust to a noisy pair), the ratio of the fastest runs (least disturbed),
the attach report and the totals (per-walker call counts, lost events) as JSON.

Examples:

    python3 scripts/bench_trace.py -k 6.1                   # the default probes
    python3 scripts/bench_trace.py -k 6.12 --pairs 9 --rounds 5
    python3 scripts/bench_trace.py -k 6.1 --hot-walkers     # + per-PFN walkers (fentry)
    python3 scripts/bench_trace.py -k 6.1 --hot-walkers --kprobes-only  # ... via kprobes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LOAD = (
    "for i in $(seq {rounds}); do cat /proc/kpageflags >/dev/null; "
    "cat /proc/kpagecount >/dev/null; echo 1 > /proc/sys/vm/compact_memory; done"
)


def _load(rounds: int) -> float:
    t = time.monotonic()
    subprocess.run(["bash", "-c", LOAD.format(rounds=rounds)], check=True)
    return time.monotonic() - t


def guest(a: argparse.Namespace) -> int:
    """Inside the guest: compile once, then interleaved traced/untraced loads."""
    from subsecinspect.probes.subsec_trace import SubsecTrace
    from subsecinspect.trace_cli import seed_from_live

    wins, c1, _, _ = seed_from_live(None)
    tracer = SubsecTrace(wins, c1, hot_walkers=a.hot_walkers, fentry=not a.kprobes_only)
    events = [0]

    def on_event(ev: Any) -> None:
        events[0] += 1

    t0 = time.monotonic()
    report = tracer.start(on_event)
    setup = time.monotonic() - t0
    print(json.dumps({"type": "attach", "attached": report.attached,
                      "fentry_off": report.fentry_off, "setup_s": round(setup, 1),
                      "seeded_windows": len(wins)}), flush=True)
    try:
        _load(a.rounds)  # warm-up (page cache, compaction state)
        pairs = []
        for i in range(a.pairs):
            times: dict[bool, float] = {}
            calls = 0
            for traced in ((True, False) if i % 2 == 0 else (False, True)):
                if traced:
                    tracer.resume()
                else:
                    tracer.pause()
                before = tracer.stats()["walker_calls"]
                times[traced] = _load(a.rounds)
                tracer.poll(0)
                if traced:
                    calls = tracer.stats()["walker_calls"] - before
            pair = {"without_s": round(times[False], 3), "with_s": round(times[True], 3),
                    "ratio": round(times[True] / times[False], 4), "walker_calls": calls,
                    "lost_so_far": tracer.lost}
            pairs.append(pair)
            print(json.dumps({"type": "pair", "n": i + 1, **pair}), flush=True)
        tracer.resume()
        tracer.drain()
        stats = tracer.stats()
    finally:
        tracer.close()
    ratios = [p["ratio"] for p in pairs]
    print(json.dumps({
        "type": "result", "rounds": a.rounds, "pairs": a.pairs,
        "median_ratio": round(statistics.median(ratios), 4),
        "slowdown_percent": round(100 * (statistics.median(ratios) - 1), 2),
        "ratio_min": min(ratios), "ratio_max": max(ratios),
        "median_without_s": round(statistics.median(p["without_s"] for p in pairs), 3),
        "median_with_s": round(statistics.median(p["with_s"] for p in pairs), 3),
        # the fastest run of each side is the least disturbed by other guests on the host
        "ratio_of_minima": round(min(p["with_s"] for p in pairs)
                                 / min(p["without_s"] for p in pairs), 4),
        "lost_events": tracer.lost, "events": events[0], "stats": stats,
    }), flush=True)
    return 0


def host(a: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from subsecinspect.lab.vm import LabVM, Nvdimm

    flags = f" --pairs {a.pairs} --rounds {a.rounds}"
    flags += " --hot-walkers" * a.hot_walkers + " --kprobes-only" * a.kprobes_only
    t0 = time.monotonic()
    with LabVM(a.kernel, mem="1G", nvdimms=[Nvdimm("1G", "128K")],
               name=f"bench-trace-{a.kernel}") as vm:
        vm.run("ndctl disable-region all && ndctl init-labels -f all && ndctl enable-region all"
               " && ndctl create-namespace -r region0 -m fsdax --map=dev -s 192M", timeout=120,
               check=True)
        vm.put(Path(__file__), "/tmp/bench_trace.py")
        h = vm.send(f"cd /tmp; python3 /tmp/bench_trace.py --guest{flags} 2>/tmp/bench.err")
        r = vm.wait(h, timeout=600 + a.pairs * a.rounds * 120)
        print(r.stdout, end="")
        if r.rc != 0:
            print(vm.run("tail -20 /tmp/bench.err", timeout=30).stdout, file=sys.stderr)
            return 1
    print(f"# kernel {a.kernel}: {time.monotonic() - t0:.0f}s wall", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", "--kernel", default="6.1")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hot-walkers", action="store_true",
                    help="also the per-PFN walkers (pfn_to_online_page, stable_page_flags)")
    ap.add_argument("--kprobes-only", action="store_true", help="never fentry/fexit")
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    return guest(a) if a.guest else host(a)


if __name__ == "__main__":
    sys.exit(main())
