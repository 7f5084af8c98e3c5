"""Classifier cases for damaged or incomplete dumps (found by the readers).

Real makedumpfile ``-d 31`` kdumps and deliberately damaged ELF dumps
(tests/vm/test_classify_damaged.py) lose evidence the classifier needs: the
``mem_section_usage`` objects (subsection_map None), a zeroed usage, or a
``pgmap_array`` node. Where the kernel's own invariants cannot vouch for a
PFN, the class is CORRUPT, never a healthy-looking C1/C3/C4. Same geometry
and layouts as test_classify_cases.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from builders import NO_ALTMAP, PRESENT, block, kernel, pgmap, section, snapshot
from test_classify_cases import (
    NVDIMM_HEAD,
    NVDIMM_TAIL,
    TAINT,
    A,
    B,
    C,
    D,
    Expected,
    S,
    _check,
    memmap_a,
    nvdimm_mixed,
    ram,
)

from subsecinspect.classify.classes import Confidence, PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.classify.explain import explain
from subsecinspect.snapshot.model import DevPagemap, MemmapStatus, Snapshot

P = PageClass
READ, NOT_CAPTURED = MemmapStatus.READ, MemmapStatus.NOT_CAPTURED


def usage_excluded() -> Snapshot:
    """makedumpfile -l -d 31 of 6.12 (lab §15): the slab-allocated mem_section_usage of
    the hot-added sections 32-37 is excluded, so every subsection_map there is None.
    A's --map=dev memmap of section 32 lives in pmem: not captured by kdump."""
    k = kernel(release="6.12.117-amd64")
    mm = memmap_a(frontier_pfn=None, altmap_free_fingerprint="",
                  readability=((0x100000, 0x108000, NOT_CAPTURED), (0x108000, 0x10C000, READ)))
    base = nvdimm_mixed(k, mm_a=mm)
    secs = tuple(replace(x, subsection_map=None) if x.section_nr >= 32 else x
                 for x in base.sections)
    return replace(base, sections=secs)


def usage_excluded_elsewhere() -> Snapshot:
    """The same -d 31 dump: hot-added kmem RAM in section 40 (offline block) and a
    namespace frozen mid-init in 41-42 (nr_range 0) have no usage either; the
    pgmap lifecycle cannot vouch there. An early section with a FULL map stays RAM."""
    k = kernel(release="6.12.117-amd64")
    secs = [*ram(8), section(40, smap=None), section(41, TAINT, smap=None),
            section(42, smap=None)]
    pg = pgmap(C, [(41 * S + 0x4000, 43 * S)], nr_range=0)
    return snapshot(k, secs, [pg], blocks=[block(40, "offline")])


def zeroed_usage() -> Snapshot:
    """mem_section_usage of section 33 zeroed in a damaged dump: A (0x108000-0x10C000)
    and B (0x10C000-0x110000) are complete ranges with live refs, so their subsections
    must be active; a clear bit there is damage, not case 4."""
    base = nvdimm_mixed(mm_a=memmap_a())
    secs = tuple(replace(x, subsection_map=0) if x.section_nr == 33 else x
                 for x in base.sections)
    return replace(base, sections=secs)


def lost_pgmap_array() -> Snapshot:
    """makedumpfile -d 31 of 7.2: the pgmap_array xarray node is excluded (readers set
    stats pgmap_array_unreadable_nodes=1); sections 32-37 are present, !online and no
    pgmap is found. kmem sections 40 (offline block) and 41 (online) keep their
    classes; an unreadable dev_pagemap the readers did find (xa span only) in
    section 44 is CORRUPT."""
    k = kernel(release="7.2.12-amd64")
    secs = [*ram(8), *(section(i, TAINT) for i in range(32, 38)), section(40),
            section(41, (*PRESENT, "IS_ONLINE")), section(44)]
    lost = DevPagemap(address=D, type="UNREADABLE", flags=0, nr_range=0, ranges=(),
                      altmap=NO_ALTMAP, xa_spans=((44 * S, 44 * S + 0x3FFF),))
    blocks = [*(block(i, "online") for i in range(8)), block(40, "offline"),
              block(41, "online")]
    snap = snapshot(k, secs, [lost], blocks=blocks)
    return replace(snap, stats=(("pgmap_array_unreadable_nodes", 1),))



CASES: list[tuple[str, Callable[[], Snapshot], Expected]] = [
    # makedumpfile -d 31 on 6.12 excluded the usage objects: the subsection state is
    # unknown; complete ranges with live refs are decided by the lifecycle (C2/C5b
    # unverified, C5 by arithmetic, NOT_CAPTURED still replaces the memmap classes);
    # section 37's gap above D is no longer "known clear" (C3) but CORRUPT.
    ("usage_excluded_d31_6.12", usage_excluded, [
        *NVDIMM_HEAD,
        (0x100000, 0x100002, P.C5_DEV_DRIVER_RESERVED, {"subsection_map": "unavailable"}),
        (0x100002, 0x100400, P.MEMMAP_NOT_CAPTURED,
         {"lifecycle_class": "C5b_DEV_ALTMAP_MEMMAP", "subsection_map": "unavailable"}, None),
        (0x100400, 0x108000, P.MEMMAP_NOT_CAPTURED,
         {"lifecycle_class": "C2_DEV_VALID", "subsection_map": "unavailable"}, None),
        (0x108000, 0x10C000, P.C2_DEV_VALID,
         {"pgmap": f"{A:#x}", "subsection_map": "unavailable"}, Confidence.UNVERIFIED),
        (0x10C000, 0x112000, P.C2_DEV_VALID,
         {"pgmap": f"{B:#x}", "compound_order": 9}, Confidence.UNVERIFIED),
        (0x112000, 0x11C000, P.C2_DEV_VALID, {"pgmap": f"{C:#x}"}, Confidence.UNVERIFIED),
        (0x11C000, 0x11C002, P.C5_DEV_DRIVER_RESERVED, {"pgmap": f"{D:#x}"}, None),
        (0x11C002, 0x11C600, P.C5b_DEV_ALTMAP_MEMMAP,
         {"fingerprint": "not examined", "subsection_map": "unavailable"}, Confidence.UNVERIFIED),
        (0x11C600, 0x12D000, P.C2_DEV_VALID, {"pgmap": f"{D:#x}"}, Confidence.UNVERIFIED),
        (0x12D000, 0x130000, P.CORRUPT,
         {"reason": "subsection map unavailable", "subsection_map": "unavailable"})]),
    # The same -d 31 dump elsewhere: no pgmap (offline kmem block) or a range still in
    # progress cannot vouch for the unreadable map -> CORRUPT, never C1/C3/C4.
    ("usage_excluded_d31_no_lifecycle", usage_excluded_elsewhere, [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 40 * S, P.HOLE, {}),
        (40 * S, 41 * S + 0x4000, P.CORRUPT, {"reason": "subsection map unavailable"}),
        (41 * S + 0x4000, 43 * S, P.CORRUPT,
         {"reason": "subsection map unavailable", "pgmap": f"{C:#x}"})]),
    # Zeroed usage in a complete range (damaged dump): section 33's clear bits under
    # complete, live A and B are CORRUPT, not C4; their other sections are untouched.
    ("zeroed_usage_complete_range", zeroed_usage, [
        *NVDIMM_HEAD,
        (0x100000, 0x100002, P.C5_DEV_DRIVER_RESERVED, {}),
        (0x100002, 0x100400, P.C5b_DEV_ALTMAP_MEMMAP, {"fingerprint": "lru_self"}),
        (0x100400, 0x108000, P.C2_DEV_VALID, {"fingerprint": "pass"}, None),
        (0x108000, 0x10C000, P.CORRUPT,
         {"reason": "subsection bit clear in a complete range", "pgmap": f"{A:#x}"}),
        (0x10C000, 0x110000, P.CORRUPT,
         {"reason": "subsection bit clear in a complete range", "pgmap": f"{B:#x}"}),
        (0x110000, 0x112000, P.C2_DEV_VALID, {"pgmap": f"{B:#x}"}),
        *NVDIMM_TAIL[1:]]),
    # 7.2 -d 31 lost the pgmap_array node: present, !online, pgmap-less PFNs without a
    # memory block may be a lost ZONE_DEVICE range -> CORRUPT, not C1; PFNs in a memory
    # block keep C1/ONLINE_RAM; the unreadable pgmap's span stays CORRUPT.
    ("lost_pgmap_array_d31_7.2", lost_pgmap_array, [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 32 * S, P.HOLE, {}),
        (32 * S, 38 * S, P.CORRUPT, {"reason": "pgmap_array unreadable"}),
        (38 * S, 40 * S, P.HOLE, {}),
        (40 * S, 41 * S, P.C1_OFFLINE_RAM, {"block_state": "offline"}),
        (41 * S, 42 * S, P.ONLINE_RAM, {}),
        (42 * S, 44 * S, P.HOLE, {}),
        (44 * S, 44 * S + 0x4000, P.CORRUPT, {"reason": "dev_pagemap unreadable",
                                             "pgmap": f"{D:#x}"}),
        (44 * S + 0x4000, 45 * S, P.CORRUPT, {"reason": "pgmap_array unreadable"})]),
]


@pytest.mark.parametrize(("name", "build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_case(name: str, build: Callable[[], Snapshot], expected: Expected) -> None:
    result = classify(build())
    _check(result.ranges, expected)
    assert result.end_pfn == expected[-1][1]


def test_explain_says_the_same_for_damaged_dumps() -> None:
    """explain() gives the classifier's verdict and names the missing evidence."""
    gap = explain(usage_excluded(), 0x12D000)  # above D in section 37, usage excluded
    assert gap.verdict.cls is P.CORRUPT
    assert gap.verdict.evidence["reason"] == "subsection map unavailable"
    sec = next(s for s in gap.steps if s.title == "section 37").facts
    assert sec["subsection_map"] == "unavailable" and "elsewhere CORRUPT" in str(sec["note"])

    zeroed = explain(zeroed_usage(), 0x108000)
    assert zeroed.verdict.cls is P.CORRUPT
    pg = next(s for s in zeroed.steps if s.title == f"dev_pagemap {A:#x}").facts
    assert "subsection bit clear in a complete range" in str(pg["note"])

    lost = explain(lost_pgmap_array(), 33 * S)
    assert (lost.verdict.start_pfn, lost.verdict.end_pfn, lost.verdict.cls) == \
        (32 * S, 38 * S, P.CORRUPT)
    dev = next(s for s in lost.steps if s.title == "dev_pagemap").facts
    assert dev["pgmap_array_unreadable_nodes"] == 1
