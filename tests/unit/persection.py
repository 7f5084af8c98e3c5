"""The per-section classifier as it was before runs of alike sections (session 1).

Kept as a reference for tests/unit/test_classify_runs.py: it cuts every section on
its own at the boundaries of the pgmap hits inside it and decides each piece with
the same :func:`subsecinspect.classify.decide._decide`, so any difference comes from the
run/cut logic of :mod:`subsecinspect.classify.runs`.
"""

from __future__ import annotations

from itertools import pairwise

from subsecinspect.classify.classes import Classification, ClassRange
from subsecinspect.classify.decide import _decide, _Decision, _emit_gap
from subsecinspect.classify.lifecycle import effective_frontier
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import Section, Snapshot

__all__ = ("classify_per_section",)


def _section_cuts(ix: SnapshotIndex, sec: Section, start: int, end: int) -> list[int]:
    cuts: set[int] = set()
    smap = sec.subsection_map
    nsub = ix.kernel.subsections_per_section
    full = (1 << nsub) - 1
    if smap is not None and smap & full not in (0, full):
        per = ix.pages_per_subsection
        for i in range(1, nsub):
            if (smap >> i & 1) != (smap >> (i - 1) & 1):
                cuts.add(start + i * per)
    for hit in ix.hits_between(start, end):
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
    blk = ix.section_block(sec.section_nr)
    if blk is not None and blk.nr_vmemmap_pages > 0:
        first = blk.start_section_nr * ix.pages_per_section
        cuts.update((first, first + blk.nr_vmemmap_pages))
    return sorted(c for c in cuts if start < c < end)


def classify_per_section(snapshot: Snapshot) -> Classification:
    """One decision per (section x cut) piece, equal neighbours merged."""
    ix = SnapshotIndex(snapshot)
    out: list[ClassRange] = []

    def emit(a: int, b: int, decision: _Decision) -> None:
        cls, ev, conf = decision
        if out and out[-1].end_pfn == a and out[-1].cls is cls \
                and out[-1].evidence_items == ev and out[-1].confidence is conf:
            out[-1] = ClassRange(out[-1].start_pfn, b, cls, ev, conf)
        else:
            out.append(ClassRange(a, b, cls, ev, conf))

    pps = ix.pages_per_section
    pos = 0
    for nr in ix.section_nrs:
        start = nr * pps
        if start >= ix.end_pfn:
            break
        if start > pos:
            _emit_gap(ix, pos, start, emit)
        end = start + pps
        points = [start, *_section_cuts(ix, ix.sections[nr], start, end), end]
        for a, b in pairwise(points):
            emit(a, b, _decide(ix, a))
        pos = end
    if pos < ix.end_pfn:
        _emit_gap(ix, pos, ix.end_pfn, emit)
    return Classification(tuple(out), ix.end_pfn, snapshot.kernel.page_size)
