"""Semantics check of scripts/bench_classify.py: is classify's answer the layout's?

Every namespace's data range must be C2 (live: from ``ndctl list -N`` + /proc/iomem;
dump: the declared layout of ``--scenario``); with ``--facts`` (the freeze.json of
``python -m lab.scale dump``) the C4 frontier must be exactly
``page_to_pfn()`` of the page gdb stopped at.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

__all__ = ("device_ranges", "semantics")

DEVICE_PREFIXES = ("C2", "C3", "C4", "C5", "MEMMAP_")


def device_ranges(doc: dict[str, Any]) -> list[list[int]]:
    return [
        [r["start_pfn"], r["end_pfn"]]
        for r in doc["ranges"]
        if r["class"].startswith(DEVICE_PREFIXES)
    ]


def _live_layout() -> tuple[list[Any], list[Any]]:
    from lab.scenarios import Namespace, parse_iomem

    text = subprocess.run(["ndctl", "list", "-N"], capture_output=True, text=True).stdout
    items = json.loads(text) if text.strip() else []
    items = items if isinstance(items, list) else [items]
    nss = [
        Namespace(n["dev"], n["mode"], n.get("map"), int(n["size"]), n.get("name")) for n in items
    ]
    return nss, list(parse_iomem(Path("/proc/iomem").read_text()))


def _data_ranges(nss: list[Any], iomem: list[Any], page: int) -> list[tuple[str, int, int]]:
    """(namespace, first pfn, end pfn) of each namespace's data: dax0.N or the fsdax tail."""
    out = []
    for ns in nss:
        idx = ns.dev.removeprefix("namespace")
        by = {e.name: e for e in iomem}
        if ns.mode == "devdax" and f"dax{idx}" in by:
            e = by[f"dax{idx}"]
            out.append((ns.dev, e.start // page, (e.end + 1) // page))
        elif ns.mode == "fsdax" and ns.dev in by:
            e = by[ns.dev]
            out.append((ns.dev, (e.end + 1 - ns.size) // page, (e.end + 1) // page))
    return out


def _classes(doc: dict[str, Any], a: int, b: int) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [
        (max(a, r["start_pfn"]), min(b, r["end_pfn"]), r["class"], r["evidence"])
        for r in doc["ranges"]
        if r["start_pfn"] < b and r["end_pfn"] > a
    ]


def _is_c2(cls: str, ev: dict[str, Any]) -> bool:
    return cls == "C2_DEV_VALID" or (
        cls == "MEMMAP_UNREADABLE" and ev.get("lifecycle_class") == "C2_DEV_VALID"
    )


def semantics(args: argparse.Namespace, doc: dict[str, Any]) -> dict[str, Any]:
    """Compare ``classify``'s ranges with the layout (and the freeze facts)."""
    page = doc["target"]["page_size"]
    problems: list[str] = []
    facts = json.loads(Path(args.facts).read_text()) if args.facts else None
    if args.target:
        from lab.scale import SCALE_SCENARIOS

        lay = SCALE_SCENARIOS[args.scenario].stages[-1].layout if args.scenario else None
        nss, iomem = (list(lay.namespaces), list(lay.iomem)) if lay else ([], [])
    else:
        nss, iomem = _live_layout()
    frozen = None
    if facts:
        start, nr = facts["entry"]["start_pfn"], facts["entry"]["nr_pages"]
        frozen = (start, start + nr)
    checked = 0
    for dev, a, b in _data_ranges(nss, iomem, page):
        if frozen and a < frozen[1] and b > frozen[0]:
            continue  # the namespace being initialised: checked against gdb below
        bad = [(s, e, c) for s, e, c, ev in _classes(doc, a, b) if not _is_c2(c, ev)]
        checked += 1
        if bad:
            problems.append(f"{dev} data [{a:#x},{b:#x}) not all C2: {bad[:3]}")
    out: dict[str, Any] = {"namespaces_checked": checked}
    if frozen:
        k = doc["kernel"]
        pfn = (facts["stop"]["page"] - int(k["vmemmap"], 16)) // k["struct_page_size"]
        data = [
            (s, e, c)
            for s, e, c, _ in _classes(doc, *frozen)
            if c in ("C2_DEV_VALID", "C4_DEV_INITIALISING")
        ]
        c4 = [ev for _, _, c, ev in _classes(doc, *frozen) if c == "C4_DEV_INITIALISING"]
        out.update(gdb_page_pfn=pfn, c4_frontier=c4[0].get("frontier_pfn") if c4 else None)
        want_tail = [(pfn, frozen[1], "C4_DEV_INITIALISING")]
        if not data or data[1:] != want_tail or data[0][1] != pfn or data[0][2] != "C2_DEV_VALID":
            problems.append(f"frozen range: classify {data}, gdb says frontier {pfn:#x}")
        if out["c4_frontier"] != pfn:
            problems.append(f"C4 frontier_pfn {out['c4_frontier']} != gdb page pfn {pfn}")
    if not checked and not frozen:
        problems.append("no namespace found to check")
    out.update(ok=not problems, problems=problems)
    return out


