#!/usr/bin/env python3
"""Overhead of ``subsecinspect trace`` on a walker-heavy load, in a lab guest.

Boots one guest (kernel ``-k``; 1 GiB RAM + 1 GiB NVDIMM with an fsdax --map=dev namespace,
so that the tracer holds seeded C5 windows), copies this script into it and runs it there
with ``--guest``: the tracer's program is compiled and seeded ONCE, then the load

    ROUNDS x { cat /proc/kpageflags > /dev/null; cat /proc/kpagecount > /dev/null;
               echo 1 > /proc/sys/vm/compact_memory }

runs ``--pairs`` times with the probes attached and with them detached
(:meth:`SubsecTrace.pause` / :meth:`~SubsecTrace.resume`: the same program and maps),
interleaved and in alternating order (on/off, off/on, ...) so that drift hits both sides
alike; after each attach/detach the guest sleeps ``--settle`` seconds so that deferred work
(kprobe optimizer, RCU-tasks callbacks of freed trampolines) is not timed. Printed: per pair
both times and the ratio, the walker-probe calls (per-PFN walkers), the /proc/kpage* read()
calls the kpage*_read probes saw and the lost events of the traced run; at the
end the MEDIAN OF THE PER-PAIR RATIOS, the ratio of the fastest runs, the attach report and
the totals (per-walker call counts, lost events) as JSON. ``--null`` keeps the probes
detached on both sides: the A/A spread, i.e. the measurement's own noise.

Why icount (default ``--icount 0``): under plain multi-threaded TCG a guest's clock is the
host's, and on this shared 2-core host a pair's ratio moved by +-50 %, so a 2 % budget could
not be judged. ``LabVM(icount=N)`` runs QEMU with ``-icount shift=N,sleep=off`` on
single-threaded TCG: the guest's clocks advance 2**N ns per guest instruction, so
``time.monotonic()`` in the guest measures INSTRUCTIONS EXECUTED, not wall time, and does not
depend on the host's load. The guest gets ONE vCPU then (``-smp 1``): with two, QEMU 7.2's
round-robin icount livelocks the boot (6.1: both vCPUs in the scheduler, no console output
after 0.03 s, at shift 0 and 3). Limits:

* it counts instructions, not cycles: cache misses, TLB misses, the cost of an ``int3``
  trap or of an exception's microcode are invisible, and every instruction costs the same
  (a kprobe's int3 + handler is cheaper here than on hardware; fentry vs kprobes compare
  only by instruction counts);
* idle time is skipped: ``sleep=off`` jumps the clock to the next guest timer deadline,
  again and again while the host has not finished an I/O, so a duration with I/O waits
  (virtio disk, serial) is NOT host-independent (the attach line's ``setup_s``, which reads
  headers from disk: 9-217 s for the same 6.1 compile). This load does none (proc files,
  page cache);
* other guest activity during a load is counted: the guest runs no daemons, and the
  periodic kernel work of :data:`QUIET` is switched off while measuring. An A/A run on 6.1
  (``--null``, 6 pairs x 20 rounds) gave per-pair ratios 0.953-1.012 without that and
  1.0000-1.0009 with it (loads of 2.586-2.588 s, i.e. +-1 M of 2.6 G instructions);
* one vCPU: per-CPU effects (perf buffer per CPU, IPIs, lock contention) are not exercised;
  ``--icount -1`` runs the old way (2 vCPUs, multi-threaded TCG, host time).

Examples:

    python3 scripts/bench_trace.py -k 6.1                   # the default probes, icount 0
    python3 scripts/bench_trace.py -k 6.1 --null            # A/A: the noise floor
    python3 scripts/bench_trace.py -k 6.12 --pairs 9 --rounds 5
    python3 scripts/bench_trace.py -k 6.1 --hot-walkers     # + per-PFN walkers (fentry)
    python3 scripts/bench_trace.py -k 6.1 --hot-walkers --kprobes-only  # ... via kprobes
    python3 scripts/bench_trace.py -k 6.1 --icount -1       # host time (multi-threaded TCG)
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


#: Periodic kernel work that lands in some loads and not in others (an extra 30-130 M
#: instructions, 1-5 %, in an icount A/A run on 6.1): off while measuring (``--no-quiet``: on).
QUIET = {
    "/proc/sys/vm/compaction_proactiveness": "0",  # kcompactd's proactive compaction
    "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag": "0",
    "/sys/kernel/mm/transparent_hugepage/enabled": "never",  # khugepaged's scans
    "/proc/sys/vm/stat_interval": "120",  # vmstat_update
    "/proc/sys/kernel/watchdog": "0",  # soft/hard lockup detector timers
}


def _quiet() -> dict[str, str]:
    done = {}
    for f, v in QUIET.items():
        try:
            Path(f).write_text(v)
            done[f] = v
        except OSError as e:
            done[f] = f"unchanged ({e.strerror})"
    return done


def _load(rounds: int) -> float:
    t = time.monotonic()
    subprocess.run(["bash", "-c", LOAD.format(rounds=rounds)], check=True)
    return time.monotonic() - t


def guest(a: argparse.Namespace) -> int:
    """Inside the guest: compile once, then interleaved traced/untraced loads."""
    from subsecinspect.cli.trace import seed_from_live
    from subsecinspect.probes.subsec_trace import SubsecTrace

    wins, c1, _, _ = seed_from_live(None)
    tracer = SubsecTrace(wins, c1, hot_walkers=a.hot_walkers, fentry=not a.kprobes_only)
    events = [0]

    def on_event(ev: Any) -> None:
        events[0] += 1

    quiet = _quiet() if a.quiet else {}
    t0 = time.monotonic()
    report = tracer.start(on_event)
    setup = time.monotonic() - t0
    clock = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    print(json.dumps({"type": "attach", "attached": report.attached,
                      "fentry_off": report.fentry_off, "setup_s": round(setup, 1),
                      "seeded_windows": len(wins), "clocksource": clock.read_text().strip(),
                      "quiet": quiet}),
          flush=True)
    try:
        _load(a.rounds)  # warm-up (page cache, compaction state)
        pairs = []
        for i in range(a.pairs):
            times: dict[bool, float] = {}
            calls = kpage = 0
            for traced in ((True, False) if i % 2 == 0 else (False, True)):
                if traced and not a.null:
                    tracer.resume()
                else:
                    tracer.pause()
                time.sleep(a.settle)  # deferred work of (de)attaching: not timed
                st0 = tracer.stats()
                times[traced] = _load(a.rounds)
                tracer.poll(0)
                if traced:
                    st1 = tracer.stats()
                    calls = st1["walker_calls"] - st0["walker_calls"]
                    kpage = st1["kpage_reads"] - st0["kpage_reads"]
            pair = {"without_s": round(times[False], 6), "with_s": round(times[True], 6),
                    "ratio": round(times[True] / times[False], 4), "walker_calls": calls,
                    "kpage_reads": kpage,
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
        "type": "result", "rounds": a.rounds, "pairs": a.pairs, "null": a.null,
        "clock": "host (multi-threaded TCG)" if a.icount < 0
        else f"icount shift={a.icount} ({2 ** a.icount} ns/instruction, single-threaded TCG)",
        "median_ratio": round(statistics.median(ratios), 4),
        "slowdown_percent": round(100 * (statistics.median(ratios) - 1), 2),
        "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ratio_stdev": round(statistics.stdev(ratios), 4) if len(ratios) > 1 else 0.0,
        "median_without_s": round(statistics.median(p["without_s"] for p in pairs), 6),
        "median_with_s": round(statistics.median(p["with_s"] for p in pairs), 6),
        # the fastest run of each side is the least disturbed by other guests on the host
        "ratio_of_minima": round(min(p["with_s"] for p in pairs)
                                 / min(p["without_s"] for p in pairs), 4),
        "lost_events": tracer.lost, "events": events[0], "stats": stats,
    }), flush=True)
    return 0


def host(a: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lab import ndctl
    from lab.vm import LabVM, Nvdimm

    flags = f" --pairs {a.pairs} --rounds {a.rounds} --settle {a.settle} --icount {a.icount}"
    flags += " --hot-walkers" * a.hot_walkers + " --kprobes-only" * a.kprobes_only
    flags += " --null" * a.null + " --no-quiet" * (not a.quiet)
    icount = a.icount if a.icount >= 0 else None
    # icount: ONE vCPU (with 2, 6.1 spins in __schedule on both from 0.03 s of boot on: QEMU
    # 7.2's round-robin icount); single-threaded TCG, hence the doubled timeouts.
    slow = 1 if icount is None else 2
    t0 = time.monotonic()
    with LabVM(a.kernel, mem="1G", nvdimms=[Nvdimm("1G", "128K")], icount=icount,
               smp=2 if icount is None else 1, boot_timeout=120.0 * slow,
               name=f"bench-trace-{a.kernel}") as vm:
        vm.run(f"{ndctl.reset_labels()} && {ndctl.create_namespace('fsdax', 'dev', 192 << 20)}",
               timeout=120 * slow, check=True)
        vm.put(Path(__file__), "/tmp/bench_trace.py")
        h = vm.send(f"cd /tmp; python3 /tmp/bench_trace.py --guest{flags} 2>/tmp/bench.err")
        r = vm.wait(h, timeout=(600 + a.pairs * a.rounds * 120) * slow)
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
    ap.add_argument("--rounds", type=int, help="load rounds per run (default: 20 with icount,"
                    " 5 without)")
    ap.add_argument("--hot-walkers", action="store_true",
                    help="also the per-PFN walkers (pfn_to_online_page, stable_page_flags)")
    ap.add_argument("--kprobes-only", action="store_true", help="never fentry/fexit")
    ap.add_argument("--icount", type=int, default=0, metavar="SHIFT",
                    help="QEMU -icount shift (guest time = instructions; default 0);"
                    " -1: multi-threaded TCG, guest time = host time")
    ap.add_argument("--settle", type=float, default=1.0, metavar="S",
                    help="guest seconds of sleep after each attach/detach (default 1)")
    ap.add_argument("--null", action="store_true",
                    help="A/A run: probes detached on both sides (the noise floor)")
    ap.add_argument("--no-quiet", dest="quiet", action="store_false",
                    help="leave the periodic kernel work of QUIET on")
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.rounds = a.rounds or (20 if a.icount >= 0 else 5)
    return guest(a) if a.guest else host(a)


if __name__ == "__main__":
    sys.exit(main())
