"""The ``diff --json`` document and the ``diff`` table.

Schema version 1, like every document (``render/jsondoc.py``): the header is *after*'s
(kernel, target), *before*'s kernel and target follow under ``"before"``, then::

    "changes": [{"start_pfn": int, "end_pfn": int, "phys_start": "0x...", "phys_end": "0x...",
                 "before": {"class": str, "evidence": {...}},
                 "after": {"class": str, "evidence": {...}}}, ...]
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from subsecinspect.classify.classes import ClassRange
from subsecinspect.classify.diff import ClassChange
from subsecinspect.render import jsondoc
from subsecinspect.snapshot.model import Snapshot

__all__ = ("diff_document", "diff_table")


def _side(r: ClassRange) -> dict[str, Any]:
    return {"class": r.cls.value, "evidence": dict(r.evidence_items)}


def diff_document(before: Snapshot, after: Snapshot, changes: list[ClassChange], *,
                  tool_version: str | None = None) -> dict[str, Any]:
    """The ``diff --json`` document of *changes* from *before* to *after*."""
    doc = jsondoc._header(after, "diff", tool_version)
    old = jsondoc._header(before, "diff", tool_version)
    doc["before"] = {"kernel": old["kernel"], "target": old["target"],
                     "warnings": old["warnings"]}
    shift = after.kernel.page_shift
    doc["changes"] = [
        {"start_pfn": c.start_pfn, "end_pfn": c.end_pfn,
         "phys_start": f"{c.start_pfn << shift:#x}", "phys_end": f"{c.end_pfn << shift:#x}",
         "before": _side(c.before), "after": _side(c.after)}
        for c in changes
    ]
    return doc


def diff_table(changes: list[ClassChange]) -> Table:
    """One row per changed range: PFNs, pages, class before -> after, their evidence."""
    table = Table(title=f"{len(changes)} changed ranges")
    for col in ("start_pfn", "end_pfn", "pages", "before", "after", "evidence after"):
        table.add_column(col)
    for c in changes:
        ev = ", ".join(f"{k}={v}" for k, v in c.after.evidence_items)
        table.add_row(f"{c.start_pfn:#x}", f"{c.end_pfn:#x}", str(c.end_pfn - c.start_pfn),
                      c.before.cls.value, c.after.cls.value, ev)
    return table
