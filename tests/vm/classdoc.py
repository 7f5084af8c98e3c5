"""Helpers shared by the lab tests that read ``classify --json`` documents.

Imported by the test modules of tests/vm as ``classdoc`` (pytest puts this directory on
sys.path, as tests/unit does for ``builders``). Ground truth about namespaces comes from the
guest's own reports (:class:`~lab.layout.Observed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.racecheck import class_spans as classes
from lab.scenarios import Observed

__all__ = (
    "DEGRADED",
    "INFO_BLOCK_PAGES",
    "PAGE",
    "PAGES_PER_SECTION",
    "Namespace",
    "classes",
    "degraded_summary",
    "namespaces",
    "range_at",
)

PAGE = 4096
PAGES_PER_SECTION = (128 << 20) // PAGE
INFO_BLOCK_PAGES = (8 << 10) // PAGE  # nd_info_block_reserve(): SZ_8K
#: The classes of a result that says what it could not read.
DEGRADED = ("CORRUPT", "MEMMAP_UNREADABLE", "MEMMAP_NOT_CAPTURED", "IN_FLUX")


def degraded_summary(doc: dict[str, Any]) -> str:
    """One line for the bad-input table: how many ranges, the degraded labels, the warnings."""
    warnings = doc["warnings"]
    labels = [r["class"] for r in doc["ranges"] if r["class"] in DEGRADED]
    return "; ".join([
        f"exit 0, {len(doc['ranges'])} ranges",
        ", ".join(f"{labels.count(c)} {c}" for c in DEGRADED if c in labels)
        or "no degraded label",
        f"{len(warnings)} warning(s)" + (f", first: {warnings[0]}" if warnings else ""),
    ])  # fmt: skip


@dataclass(frozen=True)
class Namespace:
    """Ground truth for one namespace: ndctl's view joined with /proc/iomem.

    PFNs; ends are exclusive.
    """

    dev: str
    mode: str
    map: str
    raw_start: int
    raw_end: int
    data_start: int


def namespaces(obs: Observed) -> tuple[Namespace, ...]:
    """The namespaces the guest reports, sorted by start: the ``namespaceX.Y`` iomem entry is
    the head (info block, and for devdax the padding), ``daxX.Y`` the rest; ndctl's ``size``
    is the data at the end."""
    by_name = {e.name: e for e in obs.iomem}
    out = []
    for ns in obs.namespaces:
        head = by_name[ns.dev]
        dax = by_name.get(ns.dev.replace("namespace", "dax"))
        raw_end = (max(head.end, dax.end) if dax is not None else head.end) + 1
        out.append(Namespace(ns.dev, ns.mode, ns.map or "", head.start // PAGE, raw_end // PAGE,
                             (raw_end - ns.size) // PAGE))
    return tuple(sorted(out, key=lambda n: n.raw_start))


def range_at(doc: dict[str, Any], pfn: int) -> dict[str, Any]:
    """The range object of *doc* that holds *pfn*."""
    for r in doc["ranges"]:
        if r["start_pfn"] <= pfn < r["end_pfn"]:
            return r
    raise AssertionError(f"pfn {pfn:#x} is in no range")
