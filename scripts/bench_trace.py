#!/usr/bin/env python3
"""Overhead of ``subsecinspect trace`` on a walker-heavy load, in a lab guest.

Boots one guest (kernel ``-k``; 1 GiB RAM + 1 GiB NVDIMM with an fsdax --map=dev namespace,
so that the tracer holds a C5 window), then times the load

    ROUNDS x { cat /proc/kpageflags > /dev/null; cat /proc/kpagecount > /dev/null;
               echo 1 > /proc/sys/vm/compact_memory }

alternately without and with the tracer attached (``trace --no-seed --json``),
``--pairs`` times each, and prints the median ratio, the tracer's walker-probe counts and
its lost events. Under TCG with other guests on the host the noise is a few per cent:
compare medians over several pairs.

Examples:

    python3 scripts/bench_trace.py -k 6.1             # 3 pairs on 6.1
    python3 scripts/bench_trace.py -k 6.12 --pairs 5 --rounds 20
    python3 scripts/bench_trace.py -k 6.1 --hot-walkers  # with the per-PFN walker probes
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from subsecinspect.lab.vm import LabVM, Nvdimm

LOAD_SH = (
    "cat > /tmp/load.sh <<'EOF'\n"
    "for i in $(seq $1); do cat /proc/kpageflags >/dev/null; cat /proc/kpagecount >/dev/null; "
    "echo 1 > /proc/sys/vm/compact_memory; done\n"
    "EOF"
)
LOAD = (
    "python3 -c 'import subprocess, sys, time; t = time.monotonic(); "
    'subprocess.run(["bash", "/tmp/load.sh", sys.argv[1]], check=True); '
    "print(time.monotonic() - t)' {rounds}"
)
TRACE = "cd /tmp; python3 -m subsecinspect trace --no-seed --json > /tmp/b.jsonl 2>/tmp/b.err"


def _load(vm: LabVM, rounds: int) -> float:
    r = vm.run(LOAD.format(rounds=rounds), timeout=600)
    if r.rc != 0:
        raise SystemExit(f"load failed: {r.stdout}{r.stderr}")
    return float(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", "--kernel", default="6.1")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--hot-walkers", action="store_true",
                    help="trace with --hot-walkers (pfn_to_online_page, stable_page_flags)")
    a = ap.parse_args()
    with LabVM(a.kernel, mem="1G", nvdimms=[Nvdimm("1G", "128K")],
               name=f"bench-trace-{a.kernel}") as vm:
        vm.run("ndctl disable-region all && ndctl init-labels -f all && ndctl enable-region all"
               " && ndctl create-namespace -r region0 -m fsdax --map=dev -s 192M", timeout=120,
               check=True)
        vm.run(LOAD_SH, timeout=60, check=True)
        _load(vm, a.rounds)  # warm-up
        base: list[float] = []
        traced: list[float] = []
        summary: dict[str, object] = {}
        for i in range(a.pairs):
            base.append(_load(vm, a.rounds))
            # stale files of the previous pair would look like an attached tracer
            vm.run("rm -f /tmp/b.jsonl /tmp/b.pid /tmp/b.err", timeout=30, check=True)
            hot = " --hot-walkers" if a.hot_walkers else ""
            h = vm.send(f"{TRACE}{hot} & echo $! > /tmp/b.pid; wait")
            t0 = time.monotonic()
            while vm.run("grep -q '\"attach\"' /tmp/b.jsonl", timeout=30).rc != 0:
                if time.monotonic() - t0 > 600:
                    raise SystemExit("tracer did not attach: " + vm.run("cat /tmp/b.err").stdout)
                time.sleep(2)
            pid = json.loads(vm.run("grep '\"attach\"' /tmp/b.jsonl", timeout=30).stdout)["pid"]
            traced.append(_load(vm, a.rounds))
            vm.run(f"kill -TERM {pid}", timeout=30)
            vm.wait(h, timeout=300)
            lines = vm.run("tail -1 /tmp/b.jsonl", timeout=30).stdout.strip()
            summary = json.loads(lines) if lines.startswith("{") else {}
            if summary.get("type") != "summary":
                print("no summary line; tracer stderr:",
                      vm.run("tail -5 /tmp/b.err; tail -c 300 /tmp/b.jsonl").stdout, flush=True)
            print(f"pair {i + 1}: without {base[-1]:.2f}s  with {traced[-1]:.2f}s  "
                  f"lost {summary.get('lost_events')}  stats {summary.get('stats')}", flush=True)
    mb, mt = statistics.median(base), statistics.median(traced)
    print(json.dumps({
        "kernel": a.kernel, "rounds": a.rounds, "pairs": a.pairs, "hot_walkers": a.hot_walkers,
        "without_s": base, "with_s": traced, "median_ratio": round(mt / mb, 4),
        "slowdown_percent": round(100 * (mt / mb - 1), 2),
        "lost_events_last_run": summary.get("lost_events"),
        "walker_calls_last_run": (summary.get("stats") or {}).get("walker_calls"),  # type: ignore[union-attr]
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
