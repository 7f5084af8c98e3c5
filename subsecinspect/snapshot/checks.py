"""Domain checks of a decoded snapshot: every value could come from a kernel.

:func:`snapshot_from_dict <subsecinspect.snapshot.codec.snapshot_from_dict>` checks the *types* of
a saved snapshot; this module checks the *values* before the classifier sees them, so that a
hand-edited or damaged file is refused with one :class:`SnapshotFormatError` line instead of
sending the classifier into a negative shift or a 2**100-PFN section.

Only what no kernel can hold is refused. What a *damaged* kernel can hold (overlapping
pgmaps, ranges past the last section, an altmap bigger than its range, a frontier outside its
range, inconsistent sections and pgmaps) passes: the classifier labels it (CORRUPT, ...).

Bounds mirrored from the kernel:

* ``PAGE_SHIFT <= SUBSECTION_SHIFT (21) <= SECTION_SIZE_BITS <= MAX_PHYSMEM_BITS <= 64``
  (include/linux/mmzone.h: ``SUBSECTIONS_PER_SECTION``; every architecture has at most
  2**11 subsections per section, we allow ``SECTION_SIZE_BITS <= 32``);
* a section number is below ``NR_MEM_SECTIONS = 1 << (MAX_PHYSMEM_BITS - SECTION_SIZE_BITS)``
  (the readers walk ``mem_section`` by index), and so is a memory block's size;
* a PFN of a dev_pagemap range, of a ``pgmap_array`` span or of memmap evidence is at most
  ``1 << (MAX_PHYSMEM_BITS - PAGE_SHIFT)`` (``pagemap._ranges`` refuses ranges past it the
  same way), and a span's last index is not below its first; fields the readers copy
  raw from a possibly damaged dump (zone spans, a memory block's start, altmap fields)
  are only bounded to 64 bits;
* every other integer is a 64-bit word, signed or unsigned (checked while decoding;
  ``subsection_map`` is a bitmap of up to 2048 bits); ``nr_range`` may be -1 (no
  ``nr_range`` before v5.10), and node ids -1 (``NUMA_NO_NODE``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subsecinspect.snapshot.model import KernelInfo, Snapshot

__all__ = ("check_snapshot",)

_WORD_END = 1 << 64
_SUBSECTION_SHIFT = 21


def _error(msg: str) -> Exception:
    from subsecinspect.snapshot.model import SnapshotFormatError

    return SnapshotFormatError(msg)


def _between(value: int | None, lo: int, hi: int, where: str) -> None:
    if value is not None and not lo <= value <= hi:
        raise _error(f"{where}: {value} is not in [{lo}, {hi}]")


def _check_kernel(k: KernelInfo) -> None:
    w = "snapshot.kernel"
    _between(k.page_shift, 9, _SUBSECTION_SHIFT, f"{w}.page_shift")
    _between(k.section_size_bits, _SUBSECTION_SHIFT, 32, f"{w}.section_size_bits")
    _between(k.max_physmem_bits, k.section_size_bits, 64, f"{w}.max_physmem_bits")
    _between(k.struct_page_size, 1, 4096, f"{w}.struct_page_size")
    _between(k.nr_zones, 1, 64, f"{w}.nr_zones")
    _between(k.zone_device, 0, k.nr_zones - 1, f"{w}.zone_device")
    for name in ("zones_pgshift", "nodes_pgshift", "pg_reserved", "pg_head"):
        _between(getattr(k, name), 0, 63, f"{w}.{name}")
    for name in ("zones_mask", "nodes_mask", "vmemmap"):
        _between(getattr(k, name), 0, _WORD_END - 1, f"{w}.{name}")
    for name in ("page_flags_offset", "page_pgmap_offset", "page_refcount_offset",
                 "page_mapcount_offset", "page_lru_offset"):  # -1: member absent
        _between(getattr(k, name), -1, 4095, f"{w}.{name}")
    _between(k.nr_node_ids, 0, 1 << 16, f"{w}.nr_node_ids")
    _between(k.highest_present_section_nr, -1, _WORD_END - 1,
             f"{w}.highest_present_section_nr")


def _check_pfns(s: Snapshot, max_pfn: int) -> None:
    def pfn(value: int | None, where: str) -> None:
        _between(value, 0, max_pfn, where)

    for i, pg in enumerate(s.pgmaps):
        w = f"snapshot.pgmaps[{i}]"
        _between(pg.nr_range, -1, _WORD_END - 1, f"{w}.nr_range")
        for j, r in enumerate(pg.ranges):
            _between(r.index, 0, _WORD_END - 1, f"{w}.ranges[{j}].index")
            pfn(r.start_pfn, f"{w}.ranges[{j}].start_pfn")
            pfn(r.end_pfn, f"{w}.ranges[{j}].end_pfn")
        for j, (a, b) in enumerate(pg.xa_spans):  # (first, last) of one xarray entry
            pfn(a, f"{w}.xa_spans[{j}][0]")
            _between(b, a, max_pfn, f"{w}.xa_spans[{j}][1]")
        alt = pg.altmap
        for name in ("base_pfn", "end_pfn", "reserve", "free", "align", "alloc"):
            _between(getattr(alt, name), 0, _WORD_END - 1, f"{w}.altmap.{name}")
        _between(pg.vmemmap_shift, 0, 63, f"{w}.vmemmap_shift")
    for i, m in enumerate(s.memmaps):
        w = f"snapshot.memmaps[{i}]"
        _between(m.range_index, 0, _WORD_END - 1, f"{w}.range_index")
        pfn(m.first_pfn, f"{w}.first_pfn")
        pfn(m.end_pfn, f"{w}.end_pfn")
        pfn(m.frontier_pfn, f"{w}.frontier_pfn")
        for j, (a, b, _) in enumerate(m.readability):
            pfn(a, f"{w}.readability[{j}][0]")
            pfn(b, f"{w}.readability[{j}][1]")
        for j, p in enumerate(m.samples):
            pfn(p.pfn, f"{w}.samples[{j}].pfn")
    for i, z in enumerate(s.zones):  # raw from NODE_DATA: garbage in a damaged dump is kept
        _between(z.start_pfn, 0, _WORD_END - 1, f"snapshot.zones[{i}].start_pfn")
        _between(z.end_pfn, 0, _WORD_END - 1, f"snapshot.zones[{i}].end_pfn")
    pfn(s.target.dump_max_pfn, "snapshot.target.dump_max_pfn")


def check_snapshot(s: Snapshot) -> None:
    """Refuse values no kernel can hold; raises :class:`SnapshotFormatError` (one line)."""
    _check_kernel(s.kernel)
    k = s.kernel
    nr_sections = 1 << (k.max_physmem_bits - k.section_size_bits)
    for i, sec in enumerate(s.sections):
        w = f"snapshot.sections[{i}]"
        _between(sec.section_nr, 0, nr_sections - 1, f"{w}.section_nr")
        _between(sec.subsection_map, 0, (1 << max(64, k.subsections_per_section)) - 1,
                 f"{w}.subsection_map")
        _between(sec.section_mem_map, 0, _WORD_END - 1, f"{w}.section_mem_map")
        _between(sec.usage, 0, _WORD_END - 1, f"{w}.usage")
    for i, b in enumerate(s.memory_blocks):
        # start_section_nr is raw from struct memory_block (garbage is kept, it matches no
        # section); nr_sections is sections_per_block, at most every section.
        w = f"snapshot.memory_blocks[{i}]"
        _between(b.start_section_nr, 0, _WORD_END - 1, f"{w}.start_section_nr")
        _between(b.nr_sections, 0, nr_sections, f"{w}.nr_sections")
    _check_pfns(s, 1 << (k.max_physmem_bits - k.page_shift))
