"""Builders for hand-made snapshots (x86_64 Debian 6.1 geometry by default).

Each helper fills the snapshot dataclasses the way a reader would for the
named kernel situation, so a test reads like the layout it describes.
"""

from __future__ import annotations

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

__all__ = (
    "FULL",
    "K61",
    "K510",
    "ONLINE_EARLY",
    "PRESENT",
    "altmap",
    "block",
    "c5b_sample",
    "dev_sample",
    "kernel",
    "pgmap",
    "section",
    "snapshot",
)

FULL = (1 << 64) - 1
PRESENT = ("MARKED_PRESENT", "HAS_MEM_MAP")
ONLINE_EARLY = (*PRESENT, "IS_ONLINE", "IS_EARLY")
VMEMMAP = 0xFFFFEA0000000000


def kernel(**kw: object) -> KernelInfo:
    """Debian 6.1 x86_64: 128 MiB sections, 64 subsections, 64-byte struct page."""
    base: dict[str, object] = dict(
        release="6.1.0-test-amd64", page_shift=12, section_size_bits=27, max_physmem_bits=46,
        struct_page_size=64, vmemmap=VMEMMAP, highest_present_section_nr=37,
        zone_device=4, nr_zones=5, zones_pgshift=51, zones_mask=7, nodes_pgshift=54,
        nodes_mask=0x3FF, nr_node_ids=1, pg_reserved=12, pg_head=16,
        page_flags_offset=0, page_pgmap_offset=8, page_refcount_offset=52,
        page_mapcount_offset=48, page_lru_offset=8,
        features=("section_taint_zone_device", "pgmap_nr_range", "pgmap_vmemmap_shift",
                  "pfn_to_online_page_fn", "pgmap_pfn_valid", "usage_rcu", "memory_blocks"),
    )
    base.update(kw)
    return KernelInfo(**base)  # type: ignore[arg-type]


K61 = kernel()
#: Debian 5.10: no TAINT, macro pfn_to_online_page, ref is a pointer.
K510 = kernel(release="5.10.0-32-amd64", pg_reserved=10, pg_head=16,
              features=("pgmap_nr_range", "pgmap_ref_pointer", "memory_blocks"))


def section(nr: int, flags: tuple[str, ...] = PRESENT, smap: int | None = FULL,
            **kw: object) -> Section:
    return Section(section_nr=nr, section_mem_map=VMEMMAP | 0x3, flags=flags,
                   usage=0xFFFF888000000000 + nr * 64, subsection_map=smap, **kw)  # type: ignore[arg-type]


def altmap(base_pfn: int, end_pfn: int, reserve: int, free: int, valid: bool = True,
           align: int = 0, alloc: int = 0) -> Altmap:
    return Altmap(base_pfn=base_pfn, end_pfn=end_pfn, reserve=reserve, free=free,
                  align=align, alloc=alloc, valid=valid)


NO_ALTMAP = Altmap(0, 0, 0, 0, 0, 0, False)


def pgmap(address: int, ranges: list[tuple[int, int]], *, type: str = "MEMORY_DEVICE_FS_DAX",
          nr_range: int | None = None, alt: Altmap = NO_ALTMAP, shift: int = 0,
          ref_dying: bool = False, xa: bool = True) -> DevPagemap:
    """A pgmap over PFN ranges (end exclusive); nr_range defaults to all complete."""
    n = len(ranges) if nr_range is None else nr_range
    rs = tuple(PgmapRange(i, a, b, i < n) for i, (a, b) in enumerate(ranges))
    spans = tuple((a, b - 1) for i, (a, b) in enumerate(ranges) if i <= n) if xa else ()
    return DevPagemap(address=address, type=type, flags=1 if alt.valid else 0, nr_range=n,
                      ranges=rs, altmap=alt, vmemmap_shift=shift, ref_dying=ref_dying,
                      xa_spans=spans)


def block(block_id: int, state: str, sections_per_block: int = 1) -> MemoryBlock:
    return MemoryBlock(block_id=block_id, start_section_nr=block_id * sections_per_block,
                       nr_sections=sections_per_block, state=state)


def dev_sample(k: KernelInfo, pfn: int, pg: int, *, zone: int = 4, nid: int = 0,
               status: MemmapStatus = MemmapStatus.READ) -> PageSample:
    """A struct page as __init_zone_device_page() leaves it (or zero if pg == 0)."""
    if status is not MemmapStatus.READ:
        return PageSample(pfn=pfn, status=status, error="FaultError")
    flags = (zone << k.zones_pgshift) | (nid << k.nodes_pgshift) | (1 << k.pg_reserved)
    if pg == 0:
        flags = 0
    return PageSample(pfn=pfn, status=status, flags=flags, pgmap_slot=pg, refcount=1,
                      mapcount=0xFFFFFFFF)


def c5b_sample(k: KernelInfo, pfn: int) -> PageSample:
    """An altmap free page after memmap_init_range(): lru self-linked."""
    flags = (4 << k.zones_pgshift) | (1 << k.pg_reserved)
    return PageSample(pfn=pfn, status=MemmapStatus.READ, flags=flags,
                      pgmap_slot=page_address(k, pfn) + k.page_lru_offset, refcount=1)


def snapshot(k: KernelInfo, sections: list[Section], pgmaps: list[DevPagemap] = (),  # type: ignore[assignment]
             memmaps: list[RangeMemmap] = (), blocks: list[MemoryBlock] = (),  # type: ignore[assignment]
             zones: list[ZoneSpan] = (), kind: str = "vmcore") -> Snapshot:  # type: ignore[assignment]
    return Snapshot(kernel=k, target=TargetInfo(kind=kind, path="/test", format="elf"),
                    sections=tuple(sections), pgmaps=tuple(pgmaps), memory_blocks=tuple(blocks),
                    zones=tuple(zones), memmaps=tuple(memmaps))
