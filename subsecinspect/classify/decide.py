"""Classify: every PFN of a snapshot into a :class:`PageClass`, with evidence.

A pure function of a :class:`~subsecinspect.snapshot.model.Snapshot`
(kernel-semantics.md §4.2-4.4). It mirrors what the kernel itself checks in
``pfn_valid()`` / ``pfn_section_valid()`` (include/linux/mmzone.h),
``get_dev_pagemap()`` and ``pfn_first()`` (mm/memremap.c), and adds what the
kernel never records: whether ``memmap_init_zone_device()`` has run.

Consecutive sections whose state is the same (flags, subsection map, memory
block state) form one run; runs are cut at the snapshot's pgmap range, altmap,
frontier and readability boundaries, and partially populated sections at
subsection boundaries. Each elementary piece is decided once by :func:`_decide`
(the same code :func:`classify_pfn` runs for one PFN), and equal neighbours are
merged; so the work is O(runs + pgmap boundaries), not O(sections), and a TiB
of uniform ZONE_DEVICE sections costs a handful of decisions.

Decisions, in order, for one PFN. Steps 3-6 are numbered as in kernel-semantics.md
§4.3, which the helpers below cite; S and U are what that list leaves implicit.

S. Section level (§4.2): ``in_flux`` → IN_FLUX; no section or not
   SECTION_MARKED_PRESENT → HOLE (the evidence names a pgmap already registered
   there: the start of the case 4 window); !SECTION_HAS_MEM_MAP → NO_MEMMAP;
   ``map_consistent`` false, an early section with an unreadable subsection map, a
   PFN claimed by two pgmaps, or in a pgmap's xarray span but none of its ranges (or
   in an unreadable pgmap) → CORRUPT.
U. Subsection map unavailable (usage unreadable or not in the dump) in a non-early
   section: unknown, not "clear". A complete range (index < nr_range) with a live ref
   implies ``sparse_add_section()`` ran, so steps 3-5 decide as if the bit were set
   (evidence ``subsection_map="unavailable"``; C2/C5b become ``unverified``);
   anywhere else in such a section → CORRUPT.
3. Subsection bit clear: pgmap registered → C4 (C4b if its ref is dying), but
   CORRUPT in a complete range with a live ref (``sparse_add_section()`` runs before
   ``nr_range++``, teardown kills the ref first); early section → EARLY_HOLE;
   otherwise C3.
4. No pgmap (:mod:`subsecinspect.classify.ram`): ONLINE → RAM_VMEMMAP_SELF_HOSTED on a
   block's memmap_on_memory vmemmap pages, RAM_LOGICALLY_OFFLINE on ``PageOffline()``
   pages, else ONLINE_RAM; !ONLINE → C1_OFFLINE_RAM (memory-block state in the
   evidence); ONLINE and EARLY never decide ZONE_DEVICE PFNs. With part of
   ``pgmap_array`` unreadable, a !ONLINE PFN no memory block covers → CORRUPT
   (ZONE_DEVICE has no memory blocks: it may belong to a lost pgmap).
5. Pgmap: range 0 with a valid altmap: ``[base, base+reserve)`` → C5 (arithmetic,
   even during teardown); then ref dying → C4b; ``[base+reserve, +free)`` → C5b if
   the altmap-free fingerprint says "lru_self", C4 if "other"; data pages
   ``[pfn_first, end)`` → C2 below the initialised frontier (5.4), C4 from it on.
   When the reader marked the struct page unreadable / not captured, the classes of
   this step that depend on its contents (C2, C4-by-frontier, C5b:
   :data:`~subsecinspect.classify.classes.MEMMAP_DEPENDENT`) become
   MEMMAP_UNREADABLE / MEMMAP_NOT_CAPTURED, with ``lifecycle_class`` saying what
   ``nr_range`` alone implies. C5, C4b, C3, C1 and the RAM/hole classes never depend
   on the memmap.
6. The live guard is the reader's (:mod:`subsecinspect.kernel.read`): what moved
   while it read arrives here as ``in_flux`` (step S).

The "frontier" of a range is ``RangeMemmap.frontier_pfn``; if the reader gave
none, the lowest failing sample in the data pages (or the range end if samples
exist and all pass). ``nr_range`` decides the lifecycle on >= v5.10 (range
index < nr_range: complete; otherwise in progress); before that only the
fingerprint does. Confidence of the memmap-dependent classes:

================  ==========================  ============================
lifecycle         fingerprint evidence        result
================  ==========================  ============================
complete          none / pass                 C2, C5b (no confidence)
complete          fails from the frontier on  C4 ``disputed``
in progress       frontier known              C2 | C4 ``fingerprint``
in progress       none                        C4 ``unverified``
no nr_range       frontier known              C2 | C4 ``fingerprint_only``
no nr_range       none                        C2, C5b ``unverified``
================  ==========================  ============================
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from itertools import pairwise
from typing import TypeVar

from subsecinspect.classify.classes import (
    Classification,
    ClassRange,
    Confidence,
    EvidenceValue,
    PageClass,
    evidence_items,
)
from subsecinspect.classify.lifecycle import (
    complete_and_live,
    effective_frontier,
    range_lifecycle,
)
from subsecinspect.classify.ram import decide_ram
from subsecinspect.classify.runs import global_cuts, section_runs, subsection_cuts
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import DevPagemap, MemmapStatus, PgmapRange, Section, Snapshot

__all__ = ("classify", "classify_pfn")

_T = TypeVar("_T")

_Decision = tuple[PageClass, tuple[tuple[str, EvidenceValue], ...], Confidence | None]

_UNREADABLE = {
    MemmapStatus.UNREADABLE: PageClass.MEMMAP_UNREADABLE,
    MemmapStatus.NOT_CAPTURED: PageClass.MEMMAP_NOT_CAPTURED,
}


def _pg_evidence(pg: DevPagemap, rng: PgmapRange | None) -> dict[str, EvidenceValue | None]:
    return {
        "pgmap": f"{pg.address:#x}",
        "pgmap_type": pg.type,
        "range_index": None if rng is None else rng.index,
    }


def _decide_unpopulated(ix: SnapshotIndex, sec: Section, pfn: int) -> _Decision:
    """§4.3 step 3: the subsection bit is clear."""
    hit = ix.hit(pfn)
    if hit is not None and len(hit.claims) == 1:
        pg, rng = hit.claims[0]
        ev = _pg_evidence(pg, rng)
        if pg.ref_dying:
            reason = "subsection cleared, pgmap still in pgmap_array (teardown)"
            return PageClass.C4b_DEV_TEARDOWN, evidence_items(**ev, reason=reason), None
        if rng is not None and complete_and_live(pg, rng):
            return (PageClass.CORRUPT,
                    evidence_items(**ev, reason="subsection bit clear in a complete range"),
                    None)
        reason = "pgmap registered, subsection not active yet"
        return PageClass.C4_DEV_INITIALISING, evidence_items(**ev, reason=reason), None
    if sec.early:
        return (PageClass.EARLY_HOLE,
                evidence_items(reason="early section, subsection not populated at boot"), None)
    hosts = sec.taint_zone_device or ix.section_hosts_pgmap(sec.section_nr)
    return (PageClass.C3_SUBSECTION_GAP,
            evidence_items(section_hosts_zone_device=True if hosts else None), None)


def _decide_map_unavailable(ix: SnapshotIndex, pfn: int) -> _Decision:
    """Non-early section whose ``subsection_map`` is unavailable: state unknown.

    Only the pgmap lifecycle can stand in for the bit: a complete range with a
    live ref was populated by ``sparse_add_section()`` (decided as if the bit
    were set, C2/C5b at most ``unverified``). Anything else is CORRUPT.
    """
    hit = ix.hit(pfn)
    if hit is not None and len(hit.claims) == 1:
        pg, rng = hit.claims[0]
        if rng is not None and complete_and_live(pg, rng):
            cls, ev, conf = _decide_device(ix, pg, rng, pfn)
            if conf is None and cls in (PageClass.C2_DEV_VALID, PageClass.C5b_DEV_ALTMAP_MEMMAP):
                conf = Confidence.UNVERIFIED
            return cls, evidence_items(**dict(ev), subsection_map="unavailable"), conf
        return (PageClass.CORRUPT,
                evidence_items(**_pg_evidence(pg, rng), reason="subsection map unavailable",
                               subsection_map="unavailable"), None)
    return (PageClass.CORRUPT,
            evidence_items(reason="subsection map unavailable", subsection_map="unavailable"),
            None)


def _by_lifecycle(complete: bool | None, done: _T, initialising: _T, unknown: _T) -> _T:
    """*done* for a complete range, *initialising* for one still initialising, else *unknown*."""
    if complete is None:
        return unknown
    return done if complete else initialising



def _memmap_unknown(
    status: MemmapStatus,
    ev: dict[str, EvidenceValue | None],
    complete: bool | None,
    lifecycle: str,
    done: PageClass,
    error: str,
) -> _Decision:
    """Step 5 with the struct page unreadable / not captured: what ``nr_range`` implies.

    *done* is the class a complete range gives (C2 for data pages, C5b for the altmap
    ``free`` pages); a range in progress implies C4, no ``nr_range`` nothing. *error* is
    the reader's fault message (``memmap_error``), when it kept one.
    """
    implied = _by_lifecycle(complete, done.value, PageClass.C4_DEV_INITIALISING.value, "unknown")
    return (_UNREADABLE[status],
            evidence_items(**ev, lifecycle=lifecycle, lifecycle_class=implied,
                           memmap=status.value, memmap_error=error or None), None)


def _decide_device(ix: SnapshotIndex, pg: DevPagemap, rng: PgmapRange, pfn: int) -> _Decision:
    """§4.3 step 5: a dev_pagemap range claims *pfn* and its subsection is active."""
    ev = _pg_evidence(pg, rng)
    alt = pg.altmap
    with_altmap = alt.valid and rng.index == 0
    if with_altmap and alt.base_pfn <= pfn < alt.base_pfn + alt.reserve:
        return (PageClass.C5_DEV_DRIVER_RESERVED,
                evidence_items(**ev, altmap_base_pfn=alt.base_pfn,
                               altmap_reserve=alt.reserve), None)
    if pg.ref_dying:
        return (PageClass.C4b_DEV_TEARDOWN,
                evidence_items(**ev, reason="percpu_ref killed (memunmap_pages)"), None)
    complete, lifecycle = range_lifecycle(pg, rng)
    mm = ix.memmap(pg, rng)
    status = ix.readability(mm, pfn)
    free_end = alt.base_pfn + alt.reserve + alt.free
    if with_altmap and alt.base_pfn + alt.reserve <= pfn < free_end:
        return _decide_altmap_free(pg, ev, complete, lifecycle,
                                   mm.altmap_free_fingerprint if mm else "", status,
                                   mm.error if mm else "")
    if status in _UNREADABLE:
        return _memmap_unknown(status, ev, complete, lifecycle, PageClass.C2_DEV_VALID,
                               mm.error if mm else "")
    frontier = effective_frontier(ix, pg, rng)
    order = pg.vmemmap_shift or None
    note = "device private memory: no CPU mapping" if pg.type.endswith("PRIVATE") else None
    show_frontier = frontier if complete is not True else None
    if frontier is None:
        if complete is False:
            return (PageClass.C4_DEV_INITIALISING,
                    evidence_items(**ev, lifecycle=lifecycle, reason="frontier unknown"),
                    Confidence.UNVERIFIED)
        conf = None if complete else Confidence.UNVERIFIED
        return (PageClass.C2_DEV_VALID,
                evidence_items(**ev, lifecycle=lifecycle, fingerprint="not examined",
                               compound_order=order, note=note), conf)
    if pfn < frontier:
        conf = _by_lifecycle(complete, None, Confidence.FINGERPRINT, Confidence.FINGERPRINT_ONLY)
        return (PageClass.C2_DEV_VALID,
                evidence_items(**ev, lifecycle=lifecycle, fingerprint="pass",
                               frontier_pfn=show_frontier, compound_order=order, note=note),
                conf)
    conf = _by_lifecycle(complete, Confidence.DISPUTED, Confidence.FINGERPRINT,
                         Confidence.FINGERPRINT_ONLY)
    reason = "fingerprint failed" if complete else "past the initialised frontier"
    return (PageClass.C4_DEV_INITIALISING,
            evidence_items(**ev, lifecycle=lifecycle, reason=reason, frontier_pfn=frontier),
            conf)


def _decide_altmap_free(
    pg: DevPagemap,
    ev: dict[str, EvidenceValue | None],
    complete: bool | None,
    lifecycle: str,
    fingerprint: str,
    status: MemmapStatus,
    error: str,
) -> _Decision:
    """C5b: altmap ``free`` pages; initialised by move_pfn_range_to_zone(), never given a pgmap."""
    fp_conf = _by_lifecycle(complete, None, Confidence.FINGERPRINT, Confidence.FINGERPRINT_ONLY)
    if fingerprint == "lru_self":
        return (PageClass.C5b_DEV_ALTMAP_MEMMAP,
                evidence_items(**ev, lifecycle=lifecycle, fingerprint="lru_self"), fp_conf)
    if fingerprint == "other":
        conf = Confidence.DISPUTED if complete else fp_conf
        return (PageClass.C4_DEV_INITIALISING,
                evidence_items(**ev, lifecycle=lifecycle, fingerprint="other",
                               reason="altmap memmap page not initialised "
                                      "(before move_pfn_range_to_zone)"), conf)
    if status in _UNREADABLE:
        return _memmap_unknown(status, ev, complete, lifecycle, PageClass.C5b_DEV_ALTMAP_MEMMAP,
                               error)
    if complete is False:
        return (PageClass.C4_DEV_INITIALISING,
                evidence_items(**ev, lifecycle=lifecycle, fingerprint="not examined",
                               reason="altmap memmap page, range still initialising"),
                Confidence.UNVERIFIED)
    return (PageClass.C5b_DEV_ALTMAP_MEMMAP,
            evidence_items(**ev, lifecycle=lifecycle, fingerprint="not examined"),
            None if complete else Confidence.UNVERIFIED)


def _decide(ix: SnapshotIndex, pfn: int) -> _Decision:
    """Class, evidence and confidence of one PFN (§4.2-4.3)."""
    sec = ix.section(pfn)
    if sec is not None and sec.in_flux:
        return (PageClass.IN_FLUX,
                evidence_items(reason="section word or usage changed between two reads"), None)
    if sec is None or not sec.present:
        hit = ix.hit(pfn)
        pgs = ",".join(sorted({f"{pg.address:#x}" for pg, _ in hit.claims})) if hit else None
        return PageClass.HOLE, evidence_items(reason="section not present", pgmap=pgs), None
    if not sec.valid:
        return (PageClass.NO_MEMMAP,
                evidence_items(reason="present without SECTION_HAS_MEM_MAP"), None)
    if not sec.map_consistent:
        return (PageClass.CORRUPT,
                evidence_items(reason="section_mem_map does not decode to vmemmap"), None)
    if sec.subsection_map is None and sec.early:
        return (PageClass.CORRUPT,
                evidence_items(reason="subsection map of an early section unreadable"), None)
    hit = ix.hit(pfn)
    if hit is not None and len(hit.claims) > 1:
        pgs = ",".join(sorted({f"{pg.address:#x}" for pg, _ in hit.claims}))
        return (PageClass.CORRUPT,
                evidence_items(reason="PFN claimed by more than one dev_pagemap", pgmap=pgs),
                None)
    if hit is not None and hit.claims[0][1] is None:
        pg = hit.claims[0][0]
        # Readers mark a dev_pagemap they could not read as type "UNREADABLE", no ranges.
        reason = ("dev_pagemap unreadable" if pg.type == "UNREADABLE"
                  else "pgmap_array entry outside the pgmap's ranges")
        return (PageClass.CORRUPT, evidence_items(reason=reason, pgmap=f"{pg.address:#x}"), None)
    if sec.subsection_map is None:
        return _decide_map_unavailable(ix, pfn)
    if not ix.subsection_bit(sec, pfn):
        return _decide_unpopulated(ix, sec, pfn)
    if hit is None:
        return decide_ram(ix, sec, pfn)
    pg, rng = hit.claims[0]
    assert rng is not None
    return _decide_device(ix, pg, rng, pfn)


def _emit_gap(
    ix: SnapshotIndex, start: int, end: int, emit: Callable[[int, int, _Decision], None]
) -> None:
    """PFNs without a section; cut only where a registered pgmap starts or ends."""
    cuts = {start, end}
    for hit in ix.hits_between(start, end):
        cuts.update(p for p in (hit.start_pfn, hit.end_pfn) if start < p < end)
    points = sorted(cuts)
    for a, b in pairwise(points):
        emit(a, b, _decide(ix, a))


def classify(snapshot: Snapshot) -> Classification:
    """Sorted, maximal ranges covering ``[0, end of the highest present section)``.

    Sections that are absent from the snapshot are HOLE. Consecutive sections that
    look alike to :func:`_decide` (:func:`~subsecinspect.classify.runs.run_key`) form one
    run, cut only at the snapshot-wide pgmap boundaries
    (:func:`~subsecinspect.classify.runs.global_cuts`); each piece is decided once and equal
    neighbours are merged, so the result is the same as deciding every PFN.
    O(sections + pgmaps + memory blocks + readability spans) cheap steps, plus
    subsection-granular work in partially populated sections.
    """
    ix = SnapshotIndex(snapshot)
    out: list[ClassRange] = []

    def emit(a: int, b: int, decision: _Decision) -> None:
        cls, ev, conf = decision
        if out and out[-1].end_pfn == a and out[-1].cls is cls \
                and out[-1].evidence_items == ev and out[-1].confidence is conf:
            prev = out[-1]
            out[-1] = ClassRange(prev.start_pfn, b, cls, ev, conf)
        else:
            out.append(ClassRange(a, b, cls, ev, conf))

    pps = ix.pages_per_section
    cuts = global_cuts(ix)
    pos = 0
    for first, last, key in section_runs(ix):
        start, end = first * pps, (last + 1) * pps
        if start > pos:  # sections missing from the snapshot: no section at all
            _emit_gap(ix, pos, start, emit)
        inner = cuts[bisect.bisect_right(cuts, start):bisect.bisect_left(cuts, end)]
        if key is None:
            inner = sorted({*inner, *subsection_cuts(ix, ix.sections[first], start)})
        for a, b in pairwise([start, *inner, end]):
            emit(a, b, _decide(ix, a))
        pos = end
    if pos < ix.end_pfn:
        _emit_gap(ix, pos, ix.end_pfn, emit)
    return Classification(tuple(out), ix.end_pfn, snapshot.kernel.page_size)


def classify_pfn(snapshot: Snapshot, pfn: int, index: SnapshotIndex | None = None) -> ClassRange:
    """The class of one PFN, as the one-page range ``[pfn, pfn + 1)``.

    Uses the same decision as :func:`classify`; pass *index* to reuse lookups.
    """
    ix = index if index is not None else SnapshotIndex(snapshot)
    cls, ev, conf = _decide(ix, pfn)
    return ClassRange(pfn, pfn + 1, cls, ev, conf)
