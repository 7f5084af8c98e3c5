"""Hypothesis strategies for random synthetic snapshots.

A tiny geometry keeps brute force cheap: 256 KiB pages (page_shift 18), so a
2 MiB subsection is 8 PFNs, and 16 MiB sections (section_size_bits 24), so a
section is 8 subsections = 64 PFNs. The classifier reads every size from
:class:`KernelInfo`, so nothing in it depends on x86_64's numbers.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import strategies as st

from subsecinspect.snapshot.model import (
    Altmap,
    DevPagemap,
    KernelInfo,
    MemmapStatus,
    MemoryBlock,
    PageSample,
    PgmapRange,
    RangeMemmap,
    Section,
    Snapshot,
    TargetInfo,
    ZoneSpan,
)
from subsecinspect.snapshot.pageinit import page_address

__all__ = ("SMALL_KERNEL", "snapshots")

SMALL_KERNEL = KernelInfo(
    release="synthetic", page_shift=18, section_size_bits=24, max_physmem_bits=40,
    struct_page_size=64, vmemmap=0xFFFFEA0000000000, highest_present_section_nr=15,
    zone_device=4, nr_zones=5, zones_pgshift=51, zones_mask=7, nodes_pgshift=54,
    nodes_mask=0x3FF, nr_node_ids=2, pg_reserved=12, pg_head=16, page_flags_offset=0,
    page_pgmap_offset=8, page_refcount_offset=52, page_mapcount_offset=48, page_lru_offset=8,
    features=("section_taint_zone_device", "pgmap_nr_range", "pfn_to_online_page_fn",
              "pgmap_pfn_valid"),
)
PPS = SMALL_KERNEL.pages_per_section  # 64
NSEC = 14
SPAN = NSEC * PPS
FLAGS = ("MARKED_PRESENT", "HAS_MEM_MAP", "IS_ONLINE", "IS_EARLY", "TAINT_ZONE_DEVICE")
STATUSES = list(MemmapStatus)


@st.composite
def _section(draw: st.DrawFn, nr: int) -> Section:
    present = draw(st.booleans())
    flags = []
    if present:
        flags.append("MARKED_PRESENT")
        if draw(st.integers(0, 9)) > 0:
            flags.append("HAS_MEM_MAP")
        flags += [f for f in FLAGS[2:] if draw(st.booleans())]
    smap = draw(st.one_of(st.just(0xFF), st.integers(0, 0xFF), st.none()))
    return Section(section_nr=nr, section_mem_map=0, flags=tuple(flags), usage=0x1000,
                   subsection_map=smap, map_consistent=draw(st.integers(0, 19)) > 0,
                   in_flux=draw(st.integers(0, 29)) == 0)


@st.composite
def _pgmap(draw: st.DrawFn, address: int) -> tuple[DevPagemap, list[RangeMemmap]]:
    nranges = draw(st.integers(1, 2))
    ranges = []
    for i in range(nranges):
        a = draw(st.integers(0, SPAN - 1))
        b = draw(st.integers(a + 1, min(a + 4 * PPS, SPAN)))
        ranges.append((i, a, b))
    nr_range = draw(st.integers(-1, nranges))
    limit = nranges if nr_range < 0 else min(nr_range + 1, nranges)
    rs = tuple(PgmapRange(i, a, b, nr_range < 0 or i < nr_range) for i, a, b in ranges)
    xa_mode = draw(st.sampled_from(["ranges", "none", "wide"]))
    if xa_mode == "ranges":
        spans = tuple((a, b - 1) for i, a, b in ranges[:limit])
    elif xa_mode == "wide":  # damaged: the xarray entry reaches past the ranges
        spans = tuple((a, min(b + 5, SPAN)) for i, a, b in ranges[:limit])
    else:
        spans = ()
    _, a0, b0 = ranges[0]
    if draw(st.booleans()):
        reserve = draw(st.integers(0, 6))
        free = draw(st.integers(0, 24))
        alt = Altmap(a0, b0 - 1, reserve, free, 0, 0, valid=draw(st.integers(0, 4)) > 0)
    else:
        alt = Altmap(0, 0, 0, 0, 0, 0, False)
    pg = DevPagemap(address=address, type=draw(st.sampled_from(
        ["MEMORY_DEVICE_FS_DAX", "MEMORY_DEVICE_GENERIC", "MEMORY_DEVICE_PRIVATE"])),
        flags=int(alt.valid), nr_range=nr_range, ranges=rs, altmap=alt,
        vmemmap_shift=draw(st.sampled_from([0, 0, 2])),
        ref_dying=draw(st.integers(0, 5)) == 0, xa_spans=spans)
    memmaps = []
    for i, a, b in ranges:
        if not draw(st.booleans()):
            continue
        frontier = draw(st.one_of(st.none(), st.integers(a, b)))
        cuts = sorted(set(draw(st.lists(st.integers(a, b), max_size=3))) | {a, b})
        readability = tuple((x, y, draw(st.sampled_from(STATUSES)))
                            for x, y in pairwise(cuts) if x < y)
        samples = tuple(_sample(address, p, draw(st.integers(0, 3)))
                        for p in draw(st.lists(st.integers(a, b - 1), max_size=4)))
        memmaps.append(RangeMemmap(
            pgmap=address, range_index=i, first_pfn=a, end_pfn=b, frontier_pfn=frontier,
            readability=readability, samples=samples,
            altmap_free_fingerprint=draw(st.sampled_from(["", "lru_self", "other"]))))
    return pg, memmaps


def _sample(pgmap: int, pfn: int, kind: int) -> PageSample:
    k = SMALL_KERNEL
    dev = (4 << k.zones_pgshift) | (1 << k.pg_reserved)
    if kind == 0:  # initialised
        return PageSample(pfn, MemmapStatus.READ, flags=dev, pgmap_slot=pgmap, refcount=1)
    if kind == 1:  # zero memmap (init_on_alloc)
        return PageSample(pfn, MemmapStatus.READ)
    if kind == 2:  # wrong slot
        return PageSample(pfn, MemmapStatus.READ, flags=dev,
                          pgmap_slot=page_address(k, pfn) + 8)
    return PageSample(pfn, MemmapStatus.UNREADABLE, error="FaultError")


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """A random snapshot over at most 14 sections of 64 PFNs."""
    nrs = sorted(draw(st.sets(st.integers(0, NSEC - 1), max_size=NSEC)))
    sections = tuple(draw(_section(nr)) for nr in nrs)
    pgmaps, memmaps = [], []
    for j in range(draw(st.integers(0, 3))):
        pg, mms = draw(_pgmap(0xFFFF888000100000 + 0x200 * j))
        pgmaps.append(pg)
        memmaps += mms
    blocks = tuple(
        MemoryBlock(block_id=nr, start_section_nr=nr, nr_sections=1,
                    state=draw(st.sampled_from(["online", "offline", "going-online"])),
                    # memmap_on_memory: the block's first PFNs host its own memmap
                    nr_vmemmap_pages=draw(st.sampled_from([0, 0, 1, 5, PPS])))
        for nr in nrs if draw(st.booleans())
    )
    # PageOffline() spans (virtio-mem sub-blocks), sorted and disjoint, anywhere
    cut = sorted(draw(st.sets(st.integers(0, SPAN), max_size=6)))
    offline = tuple((a, b) for a, b in zip(cut[::2], cut[1::2], strict=False) if a < b)
    if draw(st.integers(0, 4)) == 0:  # a dev_pagemap the reader could not read: spans only
        a = draw(st.integers(0, SPAN - 1))
        b = draw(st.integers(a, min(a + 2 * PPS, SPAN - 1)))
        pgmaps.append(DevPagemap(address=0xFFFF888000200000, type="UNREADABLE", flags=0,
                                 nr_range=0, ranges=(), altmap=Altmap(0, 0, 0, 0, 0, 0, False),
                                 vmemmap_shift=0, ref_dying=False, xa_spans=((a, b),)))
    zones = (ZoneSpan(0, "Device", 4, 0, SPAN, 0),) if draw(st.booleans()) else ()
    # Readers count pgmap_array xarray nodes they could not read (e.g. makedumpfile -d 31).
    lost = draw(st.sampled_from([0, 0, 1]))
    stats = (("pgmap_array_unreadable_nodes", lost),) if lost else ()
    return Snapshot(kernel=SMALL_KERNEL, target=TargetInfo("vmcore", "/synthetic", "elf"),
                    sections=sections, pgmaps=tuple(pgmaps), memory_blocks=blocks,
                    zones=zones, memmaps=tuple(memmaps), stats=stats,
                    logically_offline=offline)
