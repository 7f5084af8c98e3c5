"""Lookup structures over a :class:`~subsecinspect.snapshot.model.Snapshot`.

The classifier, :mod:`subsecinspect.classify.predicates` and :mod:`subsecinspect.classify.explain`
all need "which section / dev_pagemap range / memory block / memmap evidence
holds this PFN". :class:`SnapshotIndex` answers that in O(log n) after one
O(sections + pgmaps + memory blocks) pass. The pgmap interval map mirrors
``pgmap_array`` (mm/memremap.c): the xarray spans say *whether* a PFN is
registered, the pgmap's ``ranges[]`` say *which* range (kernel-semantics.md §4.1).
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass
from itertools import pairwise

from subsecinspect.snapshot.model import (
    DevPagemap,
    MemmapStatus,
    MemoryBlock,
    PgmapRange,
    RangeMemmap,
    Section,
    Snapshot,
)

__all__ = ("PgmapHit", "SnapshotIndex")


@dataclass(frozen=True, slots=True)
class PgmapHit:
    """PFNs ``[start_pfn, end_pfn)`` that ``pgmap_array`` maps to *claims*.

    Each claim is ``(pgmap, range)``; ``range`` is ``None`` when the PFN lies in
    the pgmap's xarray span but in none of its ``ranges[]``. More than one claim
    means overlapping pgmaps (damaged structures).
    """

    start_pfn: int
    end_pfn: int
    claims: tuple[tuple[DevPagemap, PgmapRange | None], ...]


def _find_range(pg: DevPagemap, pfn: int) -> PgmapRange | None:
    for r in pg.ranges:
        if r.start_pfn <= pfn < r.end_pfn:
            return r
    return None


def _raw_hits(pg: DevPagemap) -> list[tuple[int, int, DevPagemap, PgmapRange | None]]:
    """Split the pgmap's registered spans at its range boundaries."""
    if pg.xa_spans:
        spans = [(first, last + 1) for first, last in pg.xa_spans]
    else:
        # No xarray evidence (hand-made or older snapshots): every listed range,
        # including the one in progress, counts as registered.
        spans = [(r.start_pfn, r.end_pfn) for r in pg.ranges]
    out = []
    for a, b in spans:
        if a >= b:  # an empty or reversed span registers nothing
            continue
        cuts = {a, b}
        for r in pg.ranges:
            for p in (r.start_pfn, r.end_pfn):
                if a < p < b:
                    cuts.add(p)
        pts = sorted(cuts)
        for x, y in pairwise(pts):
            out.append((x, y, pg, _find_range(pg, x)))
    return out


def _build_hits(snapshot: Snapshot) -> list[PgmapHit]:
    raw = sorted(
        (h for pg in snapshot.pgmaps for h in _raw_hits(pg)), key=lambda h: (h[0], h[1])
    )
    overlap = any(raw[i][0] < raw[i - 1][1] for i in range(1, len(raw)))
    if not overlap:
        return [PgmapHit(a, b, ((pg, r),)) for a, b, pg, r in raw]
    bounds = sorted({p for h in raw for p in h[:2]})
    hits = []
    for a, b in pairwise(bounds):
        seen: set[int] = set()
        claims = []
        for x, y, pg, r in raw:  # one claim per pgmap even if its own ranges overlap
            if x <= a < y and pg.address not in seen:
                seen.add(pg.address)
                claims.append((pg, r))
        if claims:
            hits.append(PgmapHit(a, b, tuple(claims)))
    return hits


def _paint_blocks(blocks: tuple[MemoryBlock, ...]) -> list[tuple[int, int, MemoryBlock]]:
    """Disjoint sorted section intervals ``[start, end)`` -> block; where blocks overlap
    (damaged input) the one listed last wins. O(blocks log blocks), not O(sections)."""
    ivs = sorted(
        ((b.start_section_nr, b.start_section_nr + b.nr_sections, i, b)
         for i, b in enumerate(blocks) if b.nr_sections > 0),
        key=lambda t: (t[0], t[2]),
    )
    if all(ivs[k][0] >= ivs[k - 1][1] for k in range(1, len(ivs))):
        return [(a, e, b) for a, e, _, b in ivs]
    bounds = sorted({p for a, e, _, _ in ivs for p in (a, e)})
    out: list[tuple[int, int, MemoryBlock]] = []
    active: list[tuple[int, int, MemoryBlock]] = []  # heap of (-list index, end, block)
    k = 0
    for x, y in pairwise(bounds):
        while k < len(ivs) and ivs[k][0] <= x:
            heapq.heappush(active, (-ivs[k][2], ivs[k][1], ivs[k][3]))
            k += 1
        while active and active[0][1] <= x:
            heapq.heappop(active)
        if not active:
            continue
        block = active[0][2]
        if out and out[-1][1] == x and out[-1][2] is block:
            out[-1] = (out[-1][0], y, block)
        else:
            out.append((x, y, block))
    return out


class SnapshotIndex:
    """PFN → section, pgmap claim, memory block and memmap evidence."""

    def __init__(self, snapshot: Snapshot) -> None:
        k = snapshot.kernel
        self.snapshot = snapshot
        self.kernel = k
        self.pages_per_section = k.pages_per_section
        self.pages_per_subsection = k.pages_per_subsection
        self.section_shift = k.pfn_section_shift
        self.sections: dict[int, Section] = {s.section_nr: s for s in snapshot.sections}
        self.section_nrs: list[int] = sorted(self.sections)
        present = [s.section_nr for s in snapshot.sections if s.present or s.in_flux]
        #: End of the highest present section; every PFN below it is classified.
        self.end_pfn = (max(present) + 1) * self.pages_per_section if present else 0
        self.hits = _build_hits(snapshot)
        self._hit_starts = [h.start_pfn for h in self.hits]
        self.memmaps: dict[tuple[int, int], RangeMemmap] = {
            (m.pgmap, m.range_index): m for m in snapshot.memmaps
        }
        # Section intervals -> memory block (the later block in the list wins an overlap).
        #: ``(first section, end section, block)``, disjoint and sorted.
        self.block_intervals = _paint_blocks(snapshot.memory_blocks)
        self._block_starts = [a for a, _, _ in self.block_intervals]
        self.have_blocks = bool(snapshot.memory_blocks)
        #: Scratch memo for derived per-range values (e.g. the effective frontier).
        self.memo: dict[tuple[object, ...], object] = {}
        self._offline = snapshot.logically_offline
        self._offline_starts = [a for a, _ in self._offline]
    # --- sections -----------------------------------------------------------

    def section_nr(self, pfn: int) -> int:
        """``pfn_to_section_nr()``."""
        return pfn >> self.section_shift

    def section(self, pfn: int) -> Section | None:
        return self.sections.get(pfn >> self.section_shift)

    def subsection_index(self, pfn: int) -> int:
        """``subsection_map_index()``."""
        return (pfn & (self.pages_per_section - 1)) // self.pages_per_subsection

    def subsection_bit(self, section: Section, pfn: int) -> bool | None:
        """The subsection_map bit of *pfn*; ``None`` if the map is unavailable."""
        if section.subsection_map is None:
            return None
        return bool(section.subsection_map >> self.subsection_index(pfn) & 1)

    # --- pgmaps ---------------------------------------------------------------

    def hit(self, pfn: int) -> PgmapHit | None:
        i = bisect.bisect_right(self._hit_starts, pfn) - 1
        if i >= 0 and pfn < self.hits[i].end_pfn:
            return self.hits[i]
        return None

    def hits_between(self, start: int, end: int) -> list[PgmapHit]:
        """Hits intersecting ``[start, end)``."""
        i = max(bisect.bisect_right(self._hit_starts, start) - 1, 0)
        out = []
        while i < len(self.hits) and self.hits[i].start_pfn < end:
            if self.hits[i].end_pfn > start:
                out.append(self.hits[i])
            i += 1
        return out

    def memmap(self, pg: DevPagemap, rng: PgmapRange) -> RangeMemmap | None:
        return self.memmaps.get((pg.address, rng.index))

    @staticmethod
    def readability(memmap: RangeMemmap | None, pfn: int) -> MemmapStatus:
        """Status of the struct page of *pfn*; NOT_READ when nothing says otherwise."""
        if memmap is not None:
            for a, b, status in memmap.readability:
                if a <= pfn < b:
                    return status
        return MemmapStatus.NOT_READ

    # --- memory blocks --------------------------------------------------------

    def block(self, pfn: int) -> MemoryBlock | None:
        return self.section_block(pfn >> self.section_shift)

    def section_block(self, nr: int) -> MemoryBlock | None:
        """The memory block covering section *nr* (O(log blocks), no per-section table)."""
        i = bisect.bisect_right(self._block_starts, nr) - 1
        if i >= 0 and nr < self.block_intervals[i][1]:
            return self.block_intervals[i][2]
        return None

    def section_hosts_pgmap(self, nr: int) -> bool:
        """Some ``pgmap_array`` hit touches section *nr* (the C3 "hosts ZONE_DEVICE" note)."""
        start = nr << self.section_shift
        return bool(self.hits_between(start, start + self.pages_per_section))

    # --- hot-added RAM: logically offline pages, self-hosted vmemmap ---------

    def logically_offline(self, pfn: int) -> bool:
        """*pfn* is in a ``PageOffline()`` span the reader found."""
        i = bisect.bisect_right(self._offline_starts, pfn) - 1
        return i >= 0 and pfn < self._offline[i][1]

    def vmemmap_block(self, pfn: int) -> MemoryBlock | None:
        """The block whose memmap_on_memory vmemmap pages hold *pfn*, else ``None``."""
        b = self.block(pfn)
        if b is None or b.nr_vmemmap_pages <= 0:
            return None
        start = b.start_section_nr * self.pages_per_section
        return b if start <= pfn < start + b.nr_vmemmap_pages else None
