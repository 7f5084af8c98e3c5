#!/usr/bin/env python3
"""Benchmark BTF mode against DWARF mode: ``classify --json`` wall time and peak RSS (issue 13).

For each target, ``--rounds`` rounds, each running back to back (wall time and peak RSS from
``os.wait4``, every run its own process):

  dwarf  ``classify TARGET -s VMLINUX --json`` (live: drgn's search finds the vmlinux)
  cold   ``classify TARGET --debuginfo btf --json`` with an empty cache directory
         (``XDG_CACHE_HOME`` of its own: no per-build-ID scan of the BTF)
  warm   the same with the cache filled by a previous run

Printed per target: the medians over rounds of the per-round ratios cold/dwarf and warm/dwarf
(both ran under the same host load; the targets cold <= 1.0, warm <= 0.5 are judged on them),
peak RSS ratios (target <= 0.4), and whether the documents agree (all but the provenance and
the read time), which a benchmark of a wrong answer would hide.

    python3 scripts/bench_debuginfo.py DUMP=VMLINUX [DUMP2=VMLINUX2 ...] --rounds 7
    python3 scripts/bench_debuginfo.py live        # in a lab guest: /proc/kcore
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

KIB = 1024


def _measure(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run *cmd*: wall time, peak RSS (MiB), exit code, stdout."""
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                             env=env)
        assert p.stdout is not None
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        err.seek(0)
        tail = err.read().decode(errors="replace")[-600:]
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed (rc={rc}): {tail}")
    return {"wall_s": wall, "rss_mib": ru.ru_maxrss / KIB, "doc": json.loads(out)}


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    out["target"] = {k: v for k, v in doc["target"].items() if k != "debuginfo"}
    out["stats"] = {k: v for k, v in doc.get("stats", {}).items() if not k.endswith("_ms")}
    return out


def bench(target: str, vmlinux: str | None, rounds: int) -> dict[str, Any]:
    base = [sys.executable, "-m", "subsecinspect", "classify"]
    base += [] if target == "live" else [target]
    dwarf_cmd = [*base, *(["-s", vmlinux] if vmlinux else []), "--debuginfo", "dwarf",
                 "--json"]
    btf_cmd = [*base, "--debuginfo", "btf", "--json"]
    warm_dir = tempfile.mkdtemp(prefix="bench-btf-warm-")
    env = dict(os.environ)
    runs: dict[str, list[dict[str, Any]]] = {"dwarf": [], "cold": [], "warm": []}
    try:
        _measure(btf_cmd, {**env, "XDG_CACHE_HOME": warm_dir})  # fills the warm cache
        for _ in range(rounds):
            runs["dwarf"].append(_measure(dwarf_cmd, env))
            cold_dir = tempfile.mkdtemp(prefix="bench-btf-cold-")
            try:
                runs["cold"].append(_measure(btf_cmd, {**env, "XDG_CACHE_HOME": cold_dir}))
            finally:
                shutil.rmtree(cold_dir, ignore_errors=True)
            runs["warm"].append(_measure(btf_cmd, {**env, "XDG_CACHE_HOME": warm_dir}))
    finally:
        shutil.rmtree(warm_dir, ignore_errors=True)
    d = runs["dwarf"]
    res: dict[str, Any] = {"target": target, "rounds": rounds}
    for mode in ("dwarf", "cold", "warm"):
        res[mode] = {
            "wall_s_median": statistics.median(m["wall_s"] for m in runs[mode]),
            "rss_mib_median": statistics.median(m["rss_mib"] for m in runs[mode]),
        }
    for mode in ("cold", "warm"):
        res[f"{mode}/dwarf wall (paired median)"] = statistics.median(
            b["wall_s"] / a["wall_s"] for a, b in zip(d, runs[mode], strict=True))
        res[f"{mode}/dwarf rss (paired median)"] = statistics.median(
            b["rss_mib"] / a["rss_mib"] for a, b in zip(d, runs[mode], strict=True))
    want = _comparable(d[0]["doc"])
    res["documents_agree"] = all(
        _comparable(m["doc"]) == want for ms in runs.values() for m in ms)
    res["targets"] = {
        "cold <= 1.0 dwarf": res["cold/dwarf wall (paired median)"] <= 1.0,
        "warm <= 0.5 dwarf": res["warm/dwarf wall (paired median)"] <= 0.5,
        "rss <= 0.4 dwarf": max(res["cold/dwarf rss (paired median)"],
                                res["warm/dwarf rss (paired median)"]) <= 0.4,
    }
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="+", help="DUMP=VMLINUX, or live (/proc/kcore)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    results = []
    for t in args.targets:
        target, _, vmlinux = t.partition("=")
        results.append(bench(target, vmlinux or None, args.rounds))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"{r['target']} ({r['rounds']} rounds)")
        for mode in ("dwarf", "cold", "warm"):
            print(f"  {mode:5s} wall {r[mode]['wall_s_median']:.3f} s  "
                  f"peak RSS {r[mode]['rss_mib_median']:.0f} MiB")
        for mode in ("cold", "warm"):
            print(f"  {mode}/dwarf  wall {r[f'{mode}/dwarf wall (paired median)']:.2f}x  "
                  f"RSS {r[f'{mode}/dwarf rss (paired median)']:.2f}x")
        print(f"  documents agree: {r['documents_agree']}   targets: "
              + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in r["targets"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
