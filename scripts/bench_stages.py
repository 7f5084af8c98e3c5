"""Children of scripts/bench_classify.py (``--stage``): what each measurement runs.

  load   drgn program load alone: open the target + load_debug_info + one symbol lookup
  load-noplugins  the same with drgn's plugins disabled (DRGN_DISABLE_PLUGINS=*), as
         subsecinspect's open_target() does: the start-up classify itself has
  range  load + drgn.helpers.linux.mm.for_each_valid_page_range over every range
  page   load + one drgn Object per struct page of the device ranges, bounded in time
  api    classify's pipeline through the Python API (no CLI start-up)

Each prints one JSON object on stdout; the parent adds wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ("stage",)


def _open(target: str | None, vmlinux: str | None) -> Any:
    """drgn's own start-up, as a user of drgn would write it."""
    import drgn

    prog = drgn.Program()
    if target:
        prog.set_core_dump(target)
    else:
        prog.set_kernel()
    try:
        if vmlinux:
            prog.load_debug_info([vmlinux])
        else:
            prog.load_debug_info(main=True)
    except drgn.MissingDebugInfoError:
        pass
    prog["mem_section"]  # first lookup: the DWARF index is built lazily
    return prog


def stage(args: argparse.Namespace) -> dict[str, Any]:
    if args.stage == "api":
        return _api(args)
    if args.stage == "load-noplugins":
        from subsecinspect.target import DRGN_PLUGINS_DEFAULT

        os.environ["DRGN_DISABLE_PLUGINS"] = DRGN_PLUGINS_DEFAULT
    t0 = time.monotonic()
    prog = _open(args.target, args.vmlinux)
    out: dict[str, Any] = {"load_s": time.monotonic() - t0}
    if args.stage == "range":
        from drgn.helpers.linux.mm import for_each_valid_page_range

        t1 = time.monotonic()
        n = pages = 0
        for start, end, _mem_map in for_each_valid_page_range(prog):
            n, pages = n + 1, pages + end - start
        out.update(walk_s=time.monotonic() - t1, ranges=n, pages=pages)
    elif args.stage == "page":
        out.update(_page_walk(prog, json.loads(Path(args.ranges).read_text()), args.budget))
    return out


def _api(args: argparse.Namespace) -> dict[str, Any]:
    """(f) classify's pipeline through the Python API, without the CLI (typer, rich): what a
    start-up-free ``classify --json`` would cost. Its own drgn load is in this child too."""
    from subsecinspect import __version__
    from subsecinspect.classify.decide import classify
    from subsecinspect.kernel.read import read_snapshot
    from subsecinspect.render import jsondoc
    from subsecinspect.target import open_target

    t0 = time.monotonic()
    prog, info = open_target(args.target, args.vmlinux)
    t1 = time.monotonic()
    snap = read_snapshot(prog, info)
    t2 = time.monotonic()
    cls = classify(snap)
    t3 = time.monotonic()
    text = jsondoc.dumps(jsondoc.classification_document(snap, cls, tool_version=__version__))
    t4 = time.monotonic()
    return {
        "open_s": t1 - t0,
        "read_snapshot_s": t2 - t1,
        "classify_s": t3 - t2,
        "render_s": t4 - t3,
        "json_bytes": len(text),
    }


def _page_walk(prog: Any, ranges: list[list[int]], budget: float) -> dict[str, Any]:
    """One ``struct page`` Object per PFN (``(vmemmap + pfn).flags``), round robin over the
    ranges in chunks of 1024 pages until ``budget`` seconds are spent."""
    import drgn

    mem_map = prog["vmemmap"].read_()
    total = sum(e - s for s, e in ranges)
    cursor = [s for s, _ in ranges]
    done = faults = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < budget and done < total:
        for i, (_s, e) in enumerate(ranges):
            stop = min(e, cursor[i] + 1024)
            for pfn in range(cursor[i], stop):
                try:
                    (mem_map + pfn).flags.value_()
                except drgn.FaultError:
                    faults += 1
            done += stop - cursor[i]
            cursor[i] = stop
    spent = time.monotonic() - t0
    return {
        "walk_s": spent,
        "pages_walked": done,
        "faults": faults,
        "pages_total": total,
        "walk_total_s": spent * total / max(done, 1),
    }


