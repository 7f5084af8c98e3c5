"""Lifecycle of one ``dev_pagemap`` range, as far as a snapshot shows it.

The ``nr_range`` bookkeeping of
``memremap_pages()`` / ``pagemap_range()`` (a range counts as complete once
``nr_range`` passed it) and the initialised frontier of
``memmap_init_zone_device()`` (kernel-semantics.md §4.3). Shared by
:mod:`subsecinspect.classify.decide` and :mod:`subsecinspect.classify.explain`.
"""

from __future__ import annotations

from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import DevPagemap, PgmapRange
from subsecinspect.snapshot.pageinit import data_first_pfn, zone_device_memmap_initialised

__all__ = ("complete_and_live", "effective_frontier", "range_lifecycle")


def effective_frontier(ix: SnapshotIndex, pg: DevPagemap, rng: PgmapRange) -> int | None:
    """First data PFN whose memmap is known not to be initialised (§4.3 step 5.4).

    The reader's ``frontier_pfn`` if set; else the lowest failing fingerprint
    sample among the data pages, or the range end if samples exist and all
    pass; ``None`` without evidence.
    """
    key = ("frontier", pg.address, rng.index)
    if key in ix.memo:
        cached = ix.memo[key]
        assert cached is None or isinstance(cached, int)
        return cached
    mm = ix.memmap(pg, rng)
    frontier: int | None = None
    if mm is not None and mm.frontier_pfn is not None:
        frontier = mm.frontier_pfn
    elif mm is not None:
        first = data_first_pfn(pg, rng)
        samples = [s for s in mm.samples if first <= s.pfn < rng.end_pfn]
        failing = [
            s.pfn for s in samples
            if not zone_device_memmap_initialised(s, pg, ix.kernel, ix.snapshot.zones)
        ]
        if samples:
            frontier = min(failing, default=rng.end_pfn)
    ix.memo[key] = frontier
    return frontier


def range_lifecycle(pg: DevPagemap, rng: PgmapRange) -> tuple[bool | None, str]:
    """(complete?, text) from ``nr_range`` (≥ v5.10); ``None`` before."""
    if pg.nr_range < 0:
        return None, "no nr_range (< v5.10)"
    if rng.index < pg.nr_range:
        return True, "range complete"
    return False, "range still initialising"


def complete_and_live(pg: DevPagemap, rng: PgmapRange) -> bool:
    """Range registered and finished (index < nr_range, ≥ v5.10) and ref not killed.

    ``pagemap_range()`` calls ``sparse_add_section()`` before ``nr_range++``, and
    ``memunmap_pages()`` kills the ref before ``section_deactivate()``; so such a
    range's subsections must be active.
    """
    return pg.nr_range >= 0 and rng.index < pg.nr_range and not pg.ref_dying
