"""Table-driven classifier cases: one hand-made snapshot per kernel situation.

Geometry is Debian x86_64 (4 KiB pages, 128 MiB sections = 0x8000 PFNs, 64
subsections of 0x200 PFNs). Layouts come from the lab notes (§5.2 nvdimm
namespaces A-D in sections 32..37, §5.3 legacy ``memmap=208M!1104M``, §5.4
kmem, §9 frozen mid-init dumps, §14 5.10, §15 kdump).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from builders import (
    FULL,
    K61,
    K510,
    ONLINE_EARLY,
    PRESENT,
    altmap,
    block,
    c5b_sample,
    dev_sample,
    pgmap,
    section,
    snapshot,
)

from subsecinspect.classify.classes import Confidence, PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.snapshot.model import MemmapStatus, RangeMemmap, Snapshot

P = PageClass
S = 0x8000  # PFNs per section
TAINT = (*PRESENT, "TAINT_ZONE_DEVICE")
A, B, C, D = 0xFF38472B012F42B0, 0xFF38472B4252C3C0, 0xFF38472B022C74B0, 0xFF38472B4252C900
READ, UNREADABLE, NOT_CAPTURED = (MemmapStatus.READ, MemmapStatus.UNREADABLE,
                                  MemmapStatus.NOT_CAPTURED)


def ram(n: int = 8) -> list:
    """Boot RAM: sections 0..n-1, early and online, full maps."""
    return [section(i, ONLINE_EARLY) for i in range(n)]


def nvdimm_mixed(k=K61, *, taint: bool = True, mm_a: RangeMemmap | None = None,
                 mm_d: RangeMemmap | None = None, kind: str = "vmcore") -> Snapshot:
    """Lab §5.2: four namespaces back to back from 0x100000000 (sections 32..37).

    A fsdax map=dev 192M (altmap reserve 2 free 1022), B devdax map=mem 96M
    (compound order 9), C fsdax map=mem 160M, D devdax map=dev 272M (reserve 2
    free 1534); sections 33-35 and 37 are shared/tainted, 37 is PARTIAL 40/64.
    """
    t = TAINT if taint else PRESENT
    secs = [*ram(16), section(32), section(33, t), section(34, t), section(35, t),
            section(36), section(37, t, smap=(1 << 40) - 1)]
    pgs = [
        pgmap(A, [(0x100000, 0x10C000)], alt=altmap(0x100000, 0x10BFFF, 2, 1022, align=510,
                                                    alloc=512)),
        pgmap(B, [(0x10C000, 0x112000)], type="MEMORY_DEVICE_GENERIC", shift=9),
        pgmap(C, [(0x112000, 0x11C000)]),
        pgmap(D, [(0x11C000, 0x12D000)], type="MEMORY_DEVICE_GENERIC", shift=9,
              alt=altmap(0x11C000, 0x12CFFF, 2, 1534, align=510, alloc=512)),
    ]
    mms = [m for m in (mm_a, mm_d) if m is not None]
    return snapshot(k, secs, pgs, mms, kind=kind)


def memmap_a(**kw: Any) -> RangeMemmap:
    base: dict[str, Any] = dict(pgmap=A, range_index=0, first_pfn=0x100400, end_pfn=0x10C000,
                                frontier_pfn=0x10C000, altmap_free_fingerprint="lru_self")
    base.update(kw)
    return RangeMemmap(**base)


NVDIMM_TAIL = [
    (0x10C000, 0x112000, P.C2_DEV_VALID, {"pgmap": f"{B:#x}", "compound_order": 9}),
    (0x112000, 0x11C000, P.C2_DEV_VALID, {"pgmap": f"{C:#x}"}),
    (0x11C000, 0x11C002, P.C5_DEV_DRIVER_RESERVED, {"pgmap": f"{D:#x}", "altmap_reserve": 2}),
    (0x11C002, 0x11C600, P.C5b_DEV_ALTMAP_MEMMAP, {"fingerprint": "not examined"}),
    (0x11C600, 0x12D000, P.C2_DEV_VALID, {"pgmap": f"{D:#x}"}),
    # Section 37 above D: a sub-section gap in a non-early section.
    (0x12D000, 0x130000, P.C3_SUBSECTION_GAP, {"section_hosts_zone_device": True}),
]
NVDIMM_HEAD = [
    (0, 16 * S, P.ONLINE_RAM, {}),
    (16 * S, 32 * S, P.HOLE, {}),
]


def legacy_e820() -> Snapshot:
    """Lab §5.3: memmap=208M!1104M, -m 2G; pmem 0x45000000-0x51ffffff shares early
    online sections 8 and 10 (TAINT), section 9 is hot-added for it (not early)."""
    secs = [section(i, ONLINE_EARLY) for i in range(8)]
    secs += [section(8, (*ONLINE_EARLY, "TAINT_ZONE_DEVICE")), section(9),
             section(10, (*ONLINE_EARLY, "TAINT_ZONE_DEVICE"))]
    secs += [section(i, ONLINE_EARLY) for i in range(11, 16)]
    pg = pgmap(A, [(0x45000, 0x52000)], alt=altmap(0x45000, 0x51FFF, 2, 1022))
    mm = RangeMemmap(pgmap=A, range_index=0, first_pfn=0x45400, end_pfn=0x52000,
                     frontier_pfn=0x52000, altmap_free_fingerprint="lru_self")
    return snapshot(K61, secs, [pg], [mm])


def kmem() -> Snapshot:
    """Lab §5.4: dax0.1 reconfigured to system-ram (kmem), 128 MiB blocks = sections.

    34 onlined; 35 left offline (--no-online); 36 in online_pages() (block
    going-online, SECTION_IS_ONLINE not yet set); 37 added, no block yet.
    """
    secs = [*ram(8), section(34, (*PRESENT, "IS_ONLINE")), section(35), section(36),
            section(37)]
    blocks = [block(i, "online") for i in range(8)]
    blocks += [block(34, "online"), block(35, "offline"), block(36, "going-online")]
    return snapshot(K61, secs, blocks=blocks)


# Mid-init (lab §9): fsdax map=dev 192M at 0x104000000, frozen inside
# memmap_init_zone_device() after ~3000 pages; nr_range is still 0.
MID_BASE, MID_END = 0x104000, 0x110000
MID_FIRST = MID_BASE + 2 + 1022


def mid_init(frontier: int, *, with_sections: bool = True, sub_bits: bool = True) -> Snapshot:
    secs = list(ram(8))
    if with_sections:
        low = FULL & ~((1 << 32) - 1) if sub_bits else 0  # range starts at subsection 32
        secs += [section(32, TAINT, smap=low), section(33)]
    pg = pgmap(A, [(MID_BASE, MID_END)], nr_range=0,
               alt=altmap(MID_BASE, MID_END - 1, 2, 1022, align=510, alloc=512))
    mm = RangeMemmap(pgmap=A, range_index=0, first_pfn=MID_FIRST, end_pfn=MID_END,
                     frontier_pfn=frontier, altmap_free_fingerprint="lru_self",
                     samples=(dev_sample(K61, MID_FIRST, A), dev_sample(K61, frontier, 0)))
    return snapshot(K61, secs, [pg], [mm])


def teardown() -> Snapshot:
    """memunmap_pages() of A: percpu_ref killed; section 33's subsections of A
    already cleared by section_deactivate(), pgmap_array not yet deleted; B lives on."""
    secs = [*ram(8), section(32), section(33, TAINT, smap=FULL & ~((1 << 32) - 1))]
    pg = pgmap(A, [(0x100000, 0x10C000)], ref_dying=True, alt=altmap(0x100000, 0x10BFFF, 2, 1022))
    live = pgmap(B, [(0x10C000, 0x110000)], type="MEMORY_DEVICE_GENERIC", shift=9)
    return snapshot(K61, secs, [pg, live])


def pre_510(frontier: int | None) -> Snapshot:
    """A < 5.10 kernel: one ``res``, no nr_range; only the fingerprint can decide."""
    k = replace(K510, features=("pgmap_ref_pointer",))
    pg = replace(pgmap(C, [(0x112000, 0x11C000)]), nr_range=-1)
    mm = RangeMemmap(pgmap=C, range_index=0, first_pfn=0x112000, end_pfn=0x11C000,
                     frontier_pfn=frontier)
    return snapshot(k, [*ram(8), section(34), section(35)], [pg], [mm])


def unreadable_live(status: MemmapStatus) -> Snapshot:
    """--map=dev memmap of A lives in the altmap for the fully covered section 32
    (unreadable through /proc/kcore, not captured by kdump); section 33's part of A
    has its memmap in RAM and was read (samples pass)."""
    mm = memmap_a(frontier_pfn=None, altmap_free_fingerprint="",
                  readability=((0x100000, 0x108000, status), (0x108000, 0x10C000, READ)),
                  samples=(dev_sample(K61, 0x108000, A), dev_sample(K61, 0x10BFFF, A)))
    return nvdimm_mixed(mm_a=mm, kind="live" if status is UNREADABLE else "vmcore")


Expected = list[tuple[int, int, PageClass, dict[str, Any]] |
                tuple[int, int, PageClass, dict[str, Any], Confidence | None]]

CASES: list[tuple[str, Callable[[], Snapshot], Expected]] = [
    # Static nvdimm layout with A's memmap read: C5 reserve, C5b free (lru self-linked),
    # C2 data; devdax pgmaps show their compound order.
    ("nvdimm_mixed_6.1", lambda: nvdimm_mixed(mm_a=memmap_a()), [
        *NVDIMM_HEAD,
        (0x100000, 0x100002, P.C5_DEV_DRIVER_RESERVED, {"altmap_base_pfn": 0x100000}),
        (0x100002, 0x100400, P.C5b_DEV_ALTMAP_MEMMAP, {"fingerprint": "lru_self"}),
        (0x100400, 0x10C000, P.C2_DEV_VALID, {"lifecycle": "range complete",
                                              "fingerprint": "pass"}, None),
        *NVDIMM_TAIL]),
    # The same layout on 5.10: no SECTION_TAINT_ZONE_DEVICE; the pgmaps still decide,
    # and section 37's gap is still known to host ZONE_DEVICE.
    ("nvdimm_mixed_5.10_no_taint", lambda: nvdimm_mixed(K510, taint=False,
                                                         mm_a=memmap_a()), [
        *NVDIMM_HEAD,
        (0x100000, 0x100002, P.C5_DEV_DRIVER_RESERVED, {}),
        (0x100002, 0x100400, P.C5b_DEV_ALTMAP_MEMMAP, {}),
        (0x100400, 0x10C000, P.C2_DEV_VALID, {}),
        *NVDIMM_TAIL]),
    # Legacy e820 pmem inside early online sections: ONLINE/EARLY flags do not make
    # the pmem RAM; the RAM around it in sections 8 and 10 stays ONLINE_RAM.
    ("legacy_e820_shared_early_sections", legacy_e820, [
        (0, 0x45000, P.ONLINE_RAM, {}),
        (0x45000, 0x45002, P.C5_DEV_DRIVER_RESERVED, {}),
        (0x45002, 0x45400, P.C5b_DEV_ALTMAP_MEMMAP, {"fingerprint": "lru_self"}),
        (0x45400, 0x52000, P.C2_DEV_VALID, {"fingerprint": "pass"}),
        (0x52000, 16 * S, P.ONLINE_RAM, {})]),
    # kmem: online block = ONLINE_RAM; offline, going-online and block-less hot-added
    # sections are case 1 with the memory-block sub-state.
    ("kmem_offline_online_blocks", kmem, [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 34 * S, P.HOLE, {}),
        (34 * S, 35 * S, P.ONLINE_RAM, {}),
        (35 * S, 36 * S, P.C1_OFFLINE_RAM, {"block_state": "offline"}),
        (36 * S, 37 * S, P.C1_OFFLINE_RAM, {"block_state": "going-online"}),
        (37 * S, 38 * S, P.C1_OFFLINE_RAM, {"block_state": "none (add_memory in progress)"})]),
    # Frozen after ~3000 pages: nr_range == 0 marks range 0 in progress; the frontier
    # splits it into C2 ("range still initialising") and C4.
    ("mid_init_frontier", lambda: mid_init(MID_FIRST + 2996), [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 32 * S, P.HOLE, {}),
        (32 * S, MID_BASE, P.C3_SUBSECTION_GAP, {"section_hosts_zone_device": True}),
        (MID_BASE, MID_BASE + 2, P.C5_DEV_DRIVER_RESERVED, {}),
        (MID_BASE + 2, MID_FIRST, P.C5b_DEV_ALTMAP_MEMMAP, {}, Confidence.FINGERPRINT),
        (MID_FIRST, MID_FIRST + 2996, P.C2_DEV_VALID,
         {"lifecycle": "range still initialising"}, Confidence.FINGERPRINT),
        (MID_FIRST + 2996, MID_END, P.C4_DEV_INITIALISING,
         {"reason": "past the initialised frontier"}, Confidence.FINGERPRINT)]),
    # Frozen at the entry of memmap_init_zone_device: nothing initialised yet.
    ("mid_init_entry", lambda: mid_init(MID_FIRST), [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 32 * S, P.HOLE, {}),
        (32 * S, MID_BASE, P.C3_SUBSECTION_GAP, {}),
        (MID_BASE, MID_BASE + 2, P.C5_DEV_DRIVER_RESERVED, {}),
        (MID_BASE + 2, MID_FIRST, P.C5b_DEV_ALTMAP_MEMMAP, {}),
        (MID_FIRST, MID_END, P.C4_DEV_INITIALISING, {"frontier_pfn": MID_FIRST})]),
    # xa_store_range() done, sparse_add_section() not yet: section 32 exists (an older
    # namespace below), its subsections for the new range are still clear -> C4;
    # section 33 does not exist yet -> HOLE that names the registered pgmap.
    ("pgmap_registered_subsections_not_yet", lambda: replace(
        mid_init(MID_FIRST, sub_bits=False),
        sections=(*ram(8), section(32, PRESENT, smap=0xFF))), [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 32 * S, P.HOLE, {}),
        (32 * S, 32 * S + 0x1000, P.C1_OFFLINE_RAM, {"block_state": "unknown"}),
        (32 * S + 0x1000, MID_BASE, P.C3_SUBSECTION_GAP, {}),
        (MID_BASE, 33 * S, P.C4_DEV_INITIALISING,
         {"reason": "pgmap registered, subsection not active yet"})]),
    # Teardown: ref killed -> C4b, except the altmap reserve (pure arithmetic, C5);
    # subsections already cleared while still in pgmap_array -> C4b too.
    ("teardown_ref_dying", teardown, [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 32 * S, P.HOLE, {}),
        (0x100000, 0x100002, P.C5_DEV_DRIVER_RESERVED, {}),
        (0x100002, 0x108000, P.C4b_DEV_TEARDOWN,
         {"reason": "percpu_ref killed (memunmap_pages)"}),
        (0x108000, 0x10C000, P.C4b_DEV_TEARDOWN,
         {"reason": "subsection cleared, pgmap still in pgmap_array (teardown)"}),
        (0x10C000, 34 * S, P.C2_DEV_VALID, {"pgmap": f"{B:#x}"})]),
    # < 5.10 (no nr_range): the fingerprint alone decides.
    ("pre_5.10_fingerprint_only", lambda: pre_510(0x113000), [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 0x110000, P.HOLE, {}),
        (0x110000, 0x112000, P.C1_OFFLINE_RAM, {"block_state": "unknown"}),
        (0x112000, 0x113000, P.C2_DEV_VALID, {}, Confidence.FINGERPRINT_ONLY),
        (0x113000, 0x11C000, P.C4_DEV_INITIALISING, {}, Confidence.FINGERPRINT_ONLY),
        (0x11C000, 36 * S, P.C1_OFFLINE_RAM, {})]),
    # < 5.10 without memmap evidence: C2 but unverified.
    ("pre_5.10_no_evidence", lambda: pre_510(None), [
        (0, 8 * S, P.ONLINE_RAM, {}),
        (8 * S, 0x110000, P.HOLE, {}),
        (0x110000, 0x112000, P.C1_OFFLINE_RAM, {}),
        (0x112000, 0x11C000, P.C2_DEV_VALID, {"fingerprint": "not examined"},
         Confidence.UNVERIFIED),
        (0x11C000, 36 * S, P.C1_OFFLINE_RAM, {})]),
    # Live /proc/kcore: the --map=dev memmap in the altmap is unreadable; C5 stays
    # (arithmetic), C5b and C2 become MEMMAP_UNREADABLE with the lifecycle class.
    ("unreadable_map_dev_live", lambda: unreadable_live(UNREADABLE), [
        *NVDIMM_HEAD,
        (0x100000, 0x100002, P.C5_DEV_DRIVER_RESERVED, {}),
        (0x100002, 0x100400, P.MEMMAP_UNREADABLE,
         {"lifecycle_class": "C5b_DEV_ALTMAP_MEMMAP", "memmap": "unreadable"}),
        (0x100400, 0x108000, P.MEMMAP_UNREADABLE, {"lifecycle_class": "C2_DEV_VALID"}),
        (0x108000, 0x10C000, P.C2_DEV_VALID, {"fingerprint": "pass"}, None),
        *NVDIMM_TAIL]),
    # kdump: pmem is never dumped -> MEMMAP_NOT_CAPTURED, same shape.
    ("kdump_not_captured", lambda: unreadable_live(NOT_CAPTURED), [
        *NVDIMM_HEAD,
        (0x100000, 0x100002, P.C5_DEV_DRIVER_RESERVED, {}),
        (0x100002, 0x100400, P.MEMMAP_NOT_CAPTURED, {"memmap": "not_captured"}),
        (0x100400, 0x108000, P.MEMMAP_NOT_CAPTURED, {"lifecycle_class": "C2_DEV_VALID"}),
        (0x108000, 0x10C000, P.C2_DEV_VALID, {}),
        *NVDIMM_TAIL]),
    # Damaged / racy structures.
    ("corrupt_in_flux_no_memmap_early_hole", lambda: snapshot(K61, [
        section(0, ONLINE_EARLY, smap=FULL >> 1),       # RAM ends 2 MiB below 128 MiB
        section(1, ONLINE_EARLY, map_consistent=False),  # section_mem_map != vmemmap
        section(2, ONLINE_EARLY, in_flux=True),          # changed between two reads
        section(3, ("MARKED_PRESENT",)),                 # present, no memmap yet
        section(4, ("HAS_MEM_MAP",)),                    # not present
        section(5, ONLINE_EARLY, smap=None)]), [          # early, usage unreadable
        (0, S - 0x200, P.ONLINE_RAM, {}),
        (S - 0x200, S, P.EARLY_HOLE, {}),
        (S, 2 * S, P.CORRUPT, {"reason": "section_mem_map does not decode to vmemmap"}),
        (2 * S, 3 * S, P.IN_FLUX, {}),
        (3 * S, 4 * S, P.NO_MEMMAP, {}),
        (4 * S, 5 * S, P.HOLE, {}),
        (5 * S, 6 * S, P.CORRUPT, {"reason": "subsection map of an early section unreadable"})]),
    # Two pgmaps claiming the same PFNs (a damaged pgmap_array) -> CORRUPT there only.
    ("overlapping_pgmaps", lambda: snapshot(K61, [section(32)], [
        pgmap(A, [(0x100000, 0x104000)]), pgmap(B, [(0x102000, 0x108000)])]), [
        (0, 32 * S, P.HOLE, {}),
        (0x100000, 0x102000, P.C2_DEV_VALID, {"pgmap": f"{A:#x}"}),
        (0x102000, 0x104000, P.CORRUPT, {"reason": "PFN claimed by more than one dev_pagemap"}),
        (0x104000, 0x108000, P.C2_DEV_VALID, {"pgmap": f"{B:#x}"})]),
    # Device-private memory (HMM): valid memmap, no CPU mapping.
    ("device_private", lambda: snapshot(K61, [section(40)], [
        pgmap(C, [(40 * S, 41 * S)], type="MEMORY_DEVICE_PRIVATE")]), [
        (0, 40 * S, P.HOLE, {}),
        (40 * S, 41 * S, P.C2_DEV_VALID, {"note": "device private memory: no CPU mapping"})]),
]


def _check(result_ranges: tuple, expected: Expected) -> None:
    got = [(r.start_pfn, r.end_pfn, r.cls) for r in result_ranges]
    want = [(e[0], e[1], e[2]) for e in expected]
    assert got == want
    for r, e in zip(result_ranges, expected, strict=True):
        for key, value in e[3].items():
            assert r.evidence.get(key) == value, (hex(r.start_pfn), key)
        if len(e) == 5:
            assert r.confidence is e[4], hex(r.start_pfn)


@pytest.mark.parametrize(("name", "build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_case(name: str, build: Callable[[], Snapshot], expected: Expected) -> None:
    result = classify(build())
    _check(result.ranges, expected)
    assert result.end_pfn == expected[-1][1]


def test_going_online_block_reported_on_online_ram() -> None:
    """MEM_GOING_ONLINE with the section already ONLINE (onlining a 2-section block)
    is ONLINE_RAM with the block state as evidence; an online block adds nothing."""
    snap = snapshot(K61, [section(0, ONLINE_EARLY), section(1, (*PRESENT, "IS_ONLINE"))],
                    blocks=[block(0, "online"), block(1, "going-online")])
    r = classify(snap).ranges
    assert [(x.cls, x.evidence) for x in r] == [
        (P.ONLINE_RAM, {}), (P.ONLINE_RAM, {"block_state": "going-online"})]


def test_completed_range_with_failing_fingerprint_is_disputed_c4() -> None:
    """nr_range says complete but the struct pages past a point fail the fingerprint
    (e.g. corruption): C4 with confidence "disputed", never silently C2."""
    snap = nvdimm_mixed(mm_a=memmap_a(frontier_pfn=0x108000))
    r = classify(snap).lookup(0x108000)
    assert r is not None and r.cls is P.C4_DEV_INITIALISING
    assert r.confidence is Confidence.DISPUTED
    assert r.evidence["reason"] == "fingerprint failed"


def test_samples_derive_frontier_when_reader_gave_none() -> None:
    """Without frontier_pfn, the lowest failing data sample is the frontier."""
    mm = memmap_a(frontier_pfn=None, samples=(
        dev_sample(K61, 0x100400, A), dev_sample(K61, 0x105000, 0), c5b_sample(K61, 0x100002)))
    pg_in_progress = replace(nvdimm_mixed().pgmaps[0], nr_range=0)
    base = nvdimm_mixed(mm_a=mm)
    snap = replace(base, pgmaps=(pg_in_progress, *base.pgmaps[1:]))
    result = classify(snap)
    assert result.lookup(0x104FFF).cls is P.C2_DEV_VALID  # type: ignore[union-attr]
    assert result.lookup(0x105000).cls is P.C4_DEV_INITIALISING  # type: ignore[union-attr]


def test_online_ram_is_one_range_across_many_sections() -> None:
    """Per-section data must not fragment ONLINE_RAM (evidence is section-independent)."""
    result = classify(snapshot(K61, ram(64), blocks=[block(i, "online") for i in range(64)]))
    assert len(result.ranges) == 1 and result.ranges[0].nr_pages == 64 * S
