#!/usr/bin/env python3
"""Benchmark ``subsecinspect classify`` against drgn and crash on one target (issue 4).

Each measurement runs in its own subprocess; wall time and peak RSS come from ``os.wait4``:

  (a) load   drgn program load alone: open the target + load_debug_info + one symbol lookup
  (a') load-noplugins  (a) without drgn's plugins (its own CLI commands, found through
             importlib.metadata at every program creation), which classify disables
             (subsecinspect.target.DRGN_PLUGINS_DEFAULT): e/a' is what classify adds to the
             drgn start-up it actually has
  (b) range  (a) + drgn.helpers.linux.mm.for_each_valid_page_range over every range
  (c) page   (a) + one drgn Object per struct page of the device ranges (``page.flags``),
             bounded by --page-budget seconds and extrapolated to all device pages
  (d) crash  ``crash -s VMLINUX DUMP`` running ``kmem -n`` (dumps only; crash 8.0.2: 6.1 only)
  (e) classify  ``python -m subsecinspect classify TARGET -s VMLINUX --json``
  (f) api    the same pipeline through the Python API (open_target, read_snapshot, classify,
             render.jsondoc) without the CLI: shows what the CLI start-up (typer, rich) costs

(a), (a'), (b), (e), (f) run --repeat rounds, interleaved. Printed: the ratios e/a, e/b, c/e, d/e
(and f/a) of the fastest runs, the median over rounds of the per-round e_i/a_i (the target e
<= 1.2 a is judged on it: both ran back to back under the same host load), the targets c/e
>= 50 and RSS(e) <= 1.5 RSS(a), and a semantics check of e's classification: every
namespace's data range is C2 (live: from ``ndctl list -N`` + /proc/iomem; dump: the declared
layout of --scenario), and with --facts (the freeze.json of ``python -m
lab.scale dump``) the C4 frontier is exactly ``page_to_pfn`` of the page gdb
stopped at.

    python3 scripts/bench_classify.py DUMP -s VMLINUX --scenario scale-dump --facts F.json
    python3 scripts/bench_classify.py            # live, in a lab guest (/proc/kcore)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_semantics import device_ranges, semantics
from bench_stages import stage

KIB = 1024


# ---------------------------------------------------------------- parent
def _measure(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; wall time, peak RSS (os.wait4), rc, stdout, stderr tail."""
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        assert p.stdout is not None
        data = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    return {
        "cmd": " ".join(cmd),
        "wall_s": round(wall, 3),
        "rss_mib": round(ru.ru_maxrss / KIB, 1),
        "rc": p.returncode,
        "stdout": data.decode(errors="replace"),
        "stderr": tail,
    }


def _best(cmds: dict[str, list[str]], repeat: int) -> dict[str, dict[str, Any]]:
    """:func:`_measure` every command ``repeat`` times, interleaved (a, b, e, a, b, e, ...);
    per command the fastest run, with every wall time in ``walls_s``.

    The host is shared (other guests run under TCG): the minimum is the least disturbed run,
    and interleaving exposes the commands to the same load.
    """
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cmds}
    for _ in range(max(1, repeat)):
        for k, cmd in cmds.items():
            runs[k].append(_measure(cmd))
    out = {}
    for k, ms in runs.items():
        best = min(ms, key=lambda m: m["wall_s"] if m["rc"] == 0 else float("inf"))
        out[k] = {**best, "walls_s": [m["wall_s"] for m in ms]}
    return out


def _child(args: argparse.Namespace, stage: str, *extra: str) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--stage", stage]
    if args.target:
        cmd.append(args.target)
    if args.vmlinux:
        cmd += ["-s", args.vmlinux]
    return [*cmd, *extra]


def _inner(m: dict[str, Any]) -> dict[str, Any]:
    if m["rc"] != 0:
        raise SystemExit(f"bench: {m['cmd']} failed (rc={m['rc']}): {m['stderr']}")
    return json.loads(m.pop("stdout"))


def _crash(args: argparse.Namespace) -> dict[str, Any]:
    if not args.target:
        return {"skipped": "live target: crash is not run on /proc/kcore"}
    if not args.crash or not Path(args.crash).exists():
        return {"skipped": f"crash not found ({args.crash})"}
    with tempfile.NamedTemporaryFile("w", suffix=".cmd", delete=False) as f:
        f.write("kmem -n\nquit\n")
    try:
        m = _measure([args.crash, "-s", args.vmlinux or "", args.target, "-i", f.name])
    finally:
        os.unlink(f.name)
    out = m.pop("stdout")
    m["kmem_n_lines"] = out.count("\n")
    if m["rc"] != 0 or "NR" not in out:
        m["skipped"] = f"crash did not print kmem -n (rc={m['rc']}): {m['stderr'][-300:]}"
    return m


# ---------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"target": args.target or "/proc/kcore", "vmlinux": args.vmlinux}
    ecmd = [sys.executable, "-m", "subsecinspect", "classify"]
    ecmd += [args.target] if args.target else []
    ecmd += (["-s", args.vmlinux] if args.vmlinux else []) + ["--json"]
    cmds = {"a": _child(args, "load"), "a2": _child(args, "load-noplugins")}
    cmds |= {"b": _child(args, "range"), "e": ecmd}
    cmds["f"] = _child(args, "api")
    best = _best(cmds, args.repeat)
    a, b, e, f = best["a"], best["b"], best["e"], best["f"]
    res["f_api"] = {**f, **_inner(f)}
    res["a_load"] = {**a, **_inner(a)}
    res["a2_load_noplugins"] = {**best["a2"], **_inner(best["a2"])}
    res["b_range_walk"] = {**b, **_inner(b)}
    if e["rc"] != 0:
        raise SystemExit(f"bench: classify failed (rc={e['rc']}): {e['stderr']}")
    doc = json.loads(e.pop("stdout"))
    res["e_classify"] = {
        **e,
        "stats": doc.get("stats", {}),
        "ranges": len(doc["ranges"]),
        "summary": doc.get("summary"),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(device_ranges(doc), f)
    try:
        c = _measure(_child(args, "page", "--ranges", f.name, "--budget", str(args.page_budget)))
    finally:
        os.unlink(f.name)
    ci = _inner(c)
    per_page = ci["walk_s"] / max(ci["pages_walked"], 1)
    res["c_page_walk"] = {
        **c,
        **ci,
        "extrapolated_s": round(ci["load_s"] + ci["walk_total_s"], 1),
        "per_page_us": round(per_page * 1e6, 3),
        "tib_walk_s": round(per_page * (1 << 28), 1),  # 2^28 pages of 4 KiB = 1 TiB
    }
    res["d_crash"] = _crash(args)
    ew, aw, bw = e["wall_s"], res["a_load"]["wall_s"], res["b_range_walk"]["wall_s"]
    cw = res["c_page_walk"]["extrapolated_s"]
    dw = res["d_crash"].get("wall_s") if "skipped" not in res["d_crash"] else None
    fw = res["f_api"]["wall_s"]
    res["ratios"] = {
        "f/a": fw / aw,
        "e/a": ew / aw,
        "e/b": ew / bw,
        "c/e": cw / ew,
        "d/e": dw / ew if dw else None,
    }
    # Each round ran a, b, e, f back to back under the same load: the median of the per-round
    # ratios e_i/a_i is the robust figure on a noisy host (best-of-N pairs one lucky (a)
    # with one lucky (e)); the target is judged on it.
    def paired_median(base: dict[str, Any]) -> float:
        return statistics.median(
            ei / bi for ei, bi in zip(e["walls_s"], base["walls_s"], strict=True)
        )

    ea = paired_median(res["a_load"])
    res["ratios"]["e/a paired median"] = ea
    res["ratios"]["e/a' paired median"] = paired_median(res["a2_load_noplugins"])
    rss_ratio = e["rss_mib"] / res["a_load"]["rss_mib"]
    res["targets"] = {
        "e <= 1.2 a": ea <= 1.2,
        "c/e >= 50": cw / ew >= 50,
        "RSS(e) <= 1.5 RSS(a)": rss_ratio <= 1.5,
    }
    res["rss_ratio"] = rss_ratio
    res["semantics"] = semantics(args, doc)
    return res


def _print(res: dict[str, Any]) -> None:
    print(f"target {res['target']}  vmlinux {res['vmlinux']}")
    rows = (
        ("a", "a_load", "drgn load (open + debug info)"),
        ("a'", "a2_load_noplugins", "(a) without drgn's plugins"),
        ("b", "b_range_walk", "drgn for_each_valid_page_range"),
        ("c", "c_page_walk", "drgn per-page walk of device ranges"),
        ("d", "d_crash", "crash kmem -n"),
        ("e", "e_classify", "subsecinspect classify --json"),
        ("f", "f_api", "same pipeline via the API, no CLI"),
    )
    for key, name, what in rows:
        m = res[name]
        if "skipped" in m:
            print(f"({key}) {what:40s} skipped: {m['skipped']}")
            continue
        extra = ""
        if key == "b":
            extra = f"  [{m['ranges']} ranges, {m['pages']} pages, walk {m['walk_s']:.2f}s]"
        if key == "c":
            extra = (
                f"  [{m['pages_walked']}/{m['pages_total']} pages in {m['walk_s']:.1f}s, "
                f"{m['faults']} faults -> extrapolated {m['extrapolated_s']:.1f}s]"
            )
        if key == "e":
            st = m["stats"]
            extra = (
                f"  [struct_pages_read {st.get('struct_pages_read')}, read_ms {st.get('read_ms')}]"
            )
        if key == "f":
            extra = (
                f"  [open {m['open_s']:.2f}s, read_snapshot {m['read_snapshot_s']:.2f}s, "
                f"classify {m['classify_s']:.2f}s, render {m['render_s']:.2f}s]"
            )
        if "walls_s" in m:
            extra += f"  runs {m['walls_s']}"
        print(f"({key}) {what:40s} {m['wall_s']:8.2f} s  {m['rss_mib']:7.1f} MiB{extra}")
    r = res["ratios"]
    c = res["c_page_walk"]
    print(
        f"(c) per page {c['per_page_us']} us: 1 TiB of device pages would take {c['tib_walk_s']} s"
    )
    print("ratios: " + "  ".join(f"{k}={v:.2f}" for k, v in r.items() if v is not None))
    print(f"RSS(e)/RSS(a) = {res['rss_ratio']:.2f}")
    for k, ok in res["targets"].items():
        print(f"target {k:24s} {'PASS' if ok else 'FAIL'}")
    s = res["semantics"]
    print(
        f"semantics {'PASS' if s['ok'] else 'FAIL'}: "
        + json.dumps({k: v for k, v in s.items() if k != "ok"})
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target", nargs="?", help="vmcore (default: live /proc/kcore)")
    ap.add_argument("-s", "--vmlinux")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--page-budget", type=float, default=20.0, help="seconds for (c)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of (a), (b), (e), (f); min is kept")
    ap.add_argument("--crash", default="/usr/bin/crash")
    ap.add_argument("--scenario", help="scale scenario whose last layout the dump shows")
    ap.add_argument("--facts", help="freeze.json of python -m lab.scale dump")
    stages = ("load", "load-noplugins", "range", "page", "api")
    ap.add_argument("--stage", choices=stages, help=argparse.SUPPRESS)
    ap.add_argument("--ranges", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=20.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args)))
        return 0
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        _print(res)
    return 0 if res["semantics"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
