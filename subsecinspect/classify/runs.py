"""Where a classification can change: runs of alike sections and the snapshot's cut points.

:func:`subsecinspect.classify.decide.classify` decides one PFN per piece. A piece may
span many sections when they look alike to the decision (the same
``section_mem_map`` flags as ``valid_section()`` / ``online_section()`` /
``early_section()`` read them, the same ``subsection_map`` as
``pfn_section_valid()`` reads it, the same memory block state) and no pgmap
boundary lies inside: ranges of ``pgmap_array`` / ``pgmap->ranges[]``, the altmap
reserve and free pages of ``vmem_altmap_offset()``, the initialised frontier of
``memmap_init_zone_device()``, the memmap readability spans, the ``PageOffline()``
spans of hot-added RAM and the end of a block's memmap_on_memory vmemmap pages.
"""

from __future__ import annotations

from collections.abc import Iterator

from subsecinspect.classify.lifecycle import effective_frontier
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import MemoryBlock, Section

__all__ = ("RunKey", "global_cuts", "run_key", "section_runs", "subsection_cuts")


def global_cuts(ix: SnapshotIndex) -> list[int]:
    """Sorted PFNs where a pgmap-derived input of ``classify._decide()`` may change.

    Bounds of every ``pgmap_array`` hit and claimed range, altmap reserve/free
    bounds, effective frontiers and readability span bounds, collected once for
    the whole snapshot.
    """
    cuts: set[int] = set()
    for hit in ix.hits:
        cuts.update((hit.start_pfn, hit.end_pfn))
        for pg, rng in hit.claims:
            if rng is None:
                continue
            alt = pg.altmap
            cuts.update((rng.start_pfn, rng.end_pfn))
            if alt.valid and rng.index == 0:
                base = alt.base_pfn
                cuts.update((base, base + alt.reserve, base + alt.reserve + alt.free))
            frontier = effective_frontier(ix, pg, rng)
            if frontier is not None:
                cuts.add(frontier)
            mm = ix.memmap(pg, rng)
            if mm is not None:
                for a, b, _ in mm.readability:
                    cuts.update((a, b))
    for a, b in ix.snapshot.logically_offline:
        cuts.update((a, b))
    for blk in ix.snapshot.memory_blocks:
        if blk.nr_vmemmap_pages > 0:
            start = blk.start_section_nr * ix.pages_per_section
            cuts.update((start, start + blk.nr_vmemmap_pages))
    return sorted(cuts)


def subsection_cuts(ix: SnapshotIndex, sec: Section, start: int) -> list[int]:
    """PFNs inside the section at *start* where its subsection map changes value."""
    smap = sec.subsection_map or 0
    per = ix.pages_per_subsection
    return [start + i * per for i in range(1, ix.kernel.subsections_per_section)
            if (smap >> i & 1) != (smap >> (i - 1) & 1)]


RunKey = tuple[object, ...]


def run_key(sec: Section, full: int, hosts: bool, block: MemoryBlock | None) -> RunKey | None:
    """Everything ``classify._decide()`` reads from a section: its flags, subsection
    map, whether a pgmap hit touches it (*hosts*, the C3 note) and the state of its
    memory *block*; ``None`` when the subsection map is partial (the section is then
    cut at subsection level)."""
    smap = sec.subsection_map
    if smap is not None and smap & full not in (0, full):
        return None
    state = None if block is None else (block.state,)
    return (sec.flags, sec.map_consistent, sec.in_flux, smap, hosts, state)


def section_runs(ix: SnapshotIndex) -> Iterator[tuple[int, int, RunKey | None]]:
    """Maximal runs ``(first_nr, last_nr, key)`` of consecutive section numbers below
    ``end_pfn`` whose :func:`run_key` is equal (a partial section is a run of its own).

    One merge-like pass over the sections, the (disjoint, sorted) pgmap hits and the
    memory block intervals: O(sections + hits + blocks).
    """
    full = (1 << ix.kernel.subsections_per_section) - 1
    pps = ix.pages_per_section
    hits, blocks = ix.hits, ix.block_intervals
    h = b = 0
    first = last = -1
    key: RunKey | None = None
    for nr in ix.section_nrs:
        start = nr * pps
        if start >= ix.end_pfn:
            break
        while h < len(hits) and hits[h].end_pfn <= start:
            h += 1
        while b < len(blocks) and blocks[b][1] <= nr:
            b += 1
        hosts = h < len(hits) and hits[h].start_pfn < start + pps
        block = blocks[b][2] if b < len(blocks) and blocks[b][0] <= nr else None
        k = run_key(ix.sections[nr], full, hosts, block)
        if first >= 0 and k is not None and k == key and nr == last + 1:
            last = nr
            continue
        if first >= 0:
            yield first, last, key
        first, last, key = nr, nr, k
    if first >= 0:
        yield first, last, key
