"""A brute-force reference classifier: one PFN at a time, straight from the spec.

Written independently of :mod:`subsecinspect.classify.decide` (no index, no cuts, no
merging; linear scans over the snapshot) from kernel-semantics.md §4.2-4.4 and
the decisions documented in the classify module docstring. The property tests
compare ``classify()`` against it on every PFN of random snapshots.
"""

from __future__ import annotations

from subsecinspect.classify.classes import Confidence, PageClass
from subsecinspect.snapshot.model import DevPagemap, MemmapStatus, PgmapRange, Snapshot
from subsecinspect.snapshot.pageinit import zone_device_memmap_initialised

__all__ = ("oracle_end_pfn", "reference_class")

P = PageClass
FP, FPO, UNV, DIS = (Confidence.FINGERPRINT, Confidence.FINGERPRINT_ONLY,
                     Confidence.UNVERIFIED, Confidence.DISPUTED)


def oracle_end_pfn(snap: Snapshot) -> int:
    nrs = [s.section_nr for s in snap.sections if s.present or s.in_flux]
    return (max(nrs) + 1) * snap.kernel.pages_per_section if nrs else 0


def _fp_conf(complete: bool | None, if_complete: Confidence | None) -> Confidence | None:
    if complete is None:
        return FPO
    return if_complete if complete else FP


def reference_class(snap: Snapshot, pfn: int) -> tuple[PageClass, Confidence | None, str | None]:
    """(class, confidence, evidence "pgmap") of one PFN."""
    k = snap.kernel
    pps = k.pages_per_section
    sec = None
    for s in snap.sections:
        if s.section_nr == pfn // pps:
            sec = s
    if sec is not None and sec.in_flux:
        return P.IN_FLUX, None, None
    claims = []
    for pg in snap.pgmaps:
        if pg.xa_spans:
            registered = any(a <= pfn <= b for a, b in pg.xa_spans)
        else:
            registered = any(r.start_pfn <= pfn < r.end_pfn for r in pg.ranges)
        if registered:
            claims.append(pg)
    if sec is None or "MARKED_PRESENT" not in sec.flags:
        tags = ",".join(sorted({f"{pg.address:#x}" for pg in claims}))
        return P.HOLE, None, (tags or None)
    if "HAS_MEM_MAP" not in sec.flags:
        return P.NO_MEMMAP, None, None
    if not sec.map_consistent:
        return P.CORRUPT, None, None
    if sec.subsection_map is None and "IS_EARLY" in sec.flags:
        return P.CORRUPT, None, None
    if len(claims) > 1:
        return P.CORRUPT, None, ",".join(sorted({f"{pg.address:#x}" for pg in claims}))
    pg = claims[0] if claims else None
    tag = f"{pg.address:#x}" if pg is not None else None
    rng = None
    if pg is not None:
        for r in pg.ranges:
            if rng is None and r.start_pfn <= pfn < r.end_pfn:
                rng = r
        if rng is None:
            return P.CORRUPT, None, tag
    smap = sec.subsection_map
    idx = (pfn % pps) // k.pages_per_subsection
    # A finished range (nr_range counts it) whose ref is still live: sparse_add_section()
    # has run for it and section_deactivate() has not.
    finished_live = (pg is not None and rng is not None and not pg.ref_dying
                     and 0 <= rng.index < pg.nr_range)
    if smap is None:  # non-early here: state unknown, only a finished live range vouches
        if not finished_live:
            return P.CORRUPT, None, tag
        cls, conf, tag = _device(snap, pfn, pg, rng)
        if conf is None and cls in (P.C2_DEV_VALID, P.C5b_DEV_ALTMAP_MEMMAP):
            conf = UNV
        return cls, conf, tag
    if not (smap >> idx) & 1:
        if pg is not None:
            if pg.ref_dying:
                return P.C4b_DEV_TEARDOWN, None, tag
            if finished_live:
                return P.CORRUPT, None, tag
            return P.C4_DEV_INITIALISING, None, tag
        if "IS_EARLY" in sec.flags:
            return P.EARLY_HOLE, None, None
        return P.C3_SUBSECTION_GAP, None, None
    if pg is None:
        if "IS_ONLINE" in sec.flags:
            # memmap_on_memory's vmemmap pages first (a block's first nr_vmemmap_pages
            # PFNs), then PageOffline() spans; the last listed block wins an overlap.
            owner = None
            for b in snap.memory_blocks:
                if b.start_section_nr <= sec.section_nr < b.start_section_nr + b.nr_sections:
                    owner = b
            if owner is not None and owner.nr_vmemmap_pages > 0:
                first = owner.start_section_nr * pps
                if first <= pfn < first + owner.nr_vmemmap_pages:
                    return P.RAM_VMEMMAP_SELF_HOSTED, None, None
            if any(a <= pfn < b for a, b in snap.logically_offline):
                return P.RAM_LOGICALLY_OFFLINE, None, None
            return P.ONLINE_RAM, None, None
        in_block = any(b.start_section_nr <= sec.section_nr < b.start_section_nr + b.nr_sections
                       for b in snap.memory_blocks)
        if not in_block and dict(snap.stats).get("pgmap_array_unreadable_nodes", 0) > 0:
            return P.CORRUPT, None, None
        return P.C1_OFFLINE_RAM, None, None
    assert rng is not None
    return _device(snap, pfn, pg, rng)


def _device(snap: Snapshot, pfn: int, pg: DevPagemap, rng: PgmapRange
            ) -> tuple[PageClass, Confidence | None, str | None]:
    """A PFN of pgmap range *rng* whose subsection is (taken as) active."""
    k = snap.kernel
    tag = f"{pg.address:#x}"
    alt = pg.altmap
    on_alt = alt.valid and rng.index == 0
    if on_alt and alt.base_pfn <= pfn < alt.base_pfn + alt.reserve:
        return P.C5_DEV_DRIVER_RESERVED, None, tag
    if pg.ref_dying:
        return P.C4b_DEV_TEARDOWN, None, tag
    complete = None if pg.nr_range < 0 else rng.index < pg.nr_range
    mm = None
    for m in snap.memmaps:
        if m.pgmap == pg.address and m.range_index == rng.index:
            mm = m
    status = MemmapStatus.NOT_READ
    if mm is not None:
        for a, b, st in mm.readability:
            if a <= pfn < b:
                status = st
                break
    bad = {MemmapStatus.UNREADABLE: P.MEMMAP_UNREADABLE,
           MemmapStatus.NOT_CAPTURED: P.MEMMAP_NOT_CAPTURED}
    if on_alt and alt.base_pfn + alt.reserve <= pfn < alt.base_pfn + alt.reserve + alt.free:
        fp = mm.altmap_free_fingerprint if mm is not None else ""
        if fp == "lru_self":
            return P.C5b_DEV_ALTMAP_MEMMAP, _fp_conf(complete, None), tag
        if fp == "other":
            return P.C4_DEV_INITIALISING, _fp_conf(complete, DIS), tag
        if status in bad:
            return bad[status], None, tag
        if complete is False:
            return P.C4_DEV_INITIALISING, UNV, tag
        return P.C5b_DEV_ALTMAP_MEMMAP, (None if complete else UNV), tag
    if status in bad:
        return bad[status], None, tag
    first = rng.start_pfn + (alt.reserve + alt.free if on_alt else 0)
    frontier = None
    if mm is not None and mm.frontier_pfn is not None:
        frontier = mm.frontier_pfn
    elif mm is not None:
        data = [s for s in mm.samples if first <= s.pfn < rng.end_pfn]
        if data:
            frontier = rng.end_pfn
            for s in data:
                if not zone_device_memmap_initialised(s, pg, k, snap.zones):
                    frontier = min(frontier, s.pfn)
    if frontier is None:
        if complete is False:
            return P.C4_DEV_INITIALISING, UNV, tag
        return P.C2_DEV_VALID, (None if complete else UNV), tag
    if pfn < frontier:
        return P.C2_DEV_VALID, _fp_conf(complete, None), tag
    return P.C4_DEV_INITIALISING, _fp_conf(complete, DIS), tag
