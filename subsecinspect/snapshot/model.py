"""Snapshot: the kernel's memory-model state as plain data.

A :class:`Snapshot` is everything the classifier needs, read once from a live
kernel or a vmcore by :mod:`subsecinspect.kernel` and kept in dataclasses
that hold only ``int``, ``str``, ``bool``, enums, tuples and other snapshot
dataclasses. No drgn object ever lives here, so a snapshot can be saved as
JSON (``classify --save``; the codec is :mod:`subsecinspect.snapshot.codec`), loaded
on a machine without drgn, and built by hand in unit tests.

Kernel sources mirrored: ``include/linux/mmzone.h`` (``struct mem_section``,
``struct mem_section_usage``), ``include/linux/memremap.h``
(``struct dev_pagemap``, ``struct vmem_altmap``), ``drivers/base/memory.c``
(``struct memory_block``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = (
    "SNAPSHOT_FORMAT",
    "Altmap",
    "DevPagemap",
    "KernelInfo",
    "MemmapStatus",
    "MemoryBlock",
    "PageSample",
    "PgmapRange",
    "RangeMemmap",
    "Section",
    "Snapshot",
    "SnapshotFormatError",
    "TargetInfo",
    "ZoneSpan",
)

#: Version of the saved-snapshot format. Bump on any rename/removal/retype.
SNAPSHOT_FORMAT = 1


class SnapshotFormatError(ValueError):
    """A saved snapshot does not match :data:`SNAPSHOT_FORMAT`'s shape."""


class MemmapStatus(enum.StrEnum):
    """Whether the struct pages of a PFN span could be read from the target."""

    #: The struct pages were read.
    READ = "read"
    #: The vmemmap address does not translate or the physical page is not
    #: offered by the target (e.g. a ``--map=dev`` memmap through /proc/kcore,
    #: whose segments cover System RAM only).
    UNREADABLE = "unreadable"
    #: The target is a dump and the memmap's physical page is not in it
    #: (kdump: Persistent Memory is never dumped; excluded by the dump level).
    NOT_CAPTURED = "not_captured"
    #: Nothing was read because the classifier does not need it.
    NOT_READ = "not_read"


@dataclass(frozen=True, slots=True)
class KernelInfo:
    """Constants and feature bits of the target kernel, from debug info.

    Everything here is detected (DWARF enums, members, symbols, VMCOREINFO),
    never parsed from the release string.
    """

    release: str
    page_shift: int
    section_size_bits: int
    max_physmem_bits: int
    #: ``sizeof(struct page)``.
    struct_page_size: int
    #: The vmemmap base (``vmemmap_base`` on x86_64), i.e. ``pfn_to_page(0)``.
    vmemmap: int
    #: ``__highest_present_section_nr``.
    highest_present_section_nr: int
    #: ``ZONE_DEVICE`` from ``enum zone_type``; ``None`` without CONFIG_ZONE_DEVICE.
    zone_device: int | None
    #: ``__MAX_NR_ZONES``.
    nr_zones: int
    #: Shift and mask of the zone field in ``page->flags`` (validated on samples).
    zones_pgshift: int
    zones_mask: int
    nodes_pgshift: int
    nodes_mask: int
    nr_node_ids: int
    #: ``PG_reserved`` and ``PG_head`` from ``enum pageflags``.
    pg_reserved: int
    pg_head: int
    #: Offsets inside ``struct page``.
    page_flags_offset: int
    #: The word that is ``page->pgmap`` / ``compound_head`` / ``folio->pgmap``.
    page_pgmap_offset: int
    page_refcount_offset: int
    page_mapcount_offset: int
    #: ``offsetof(struct page, lru)``: C5b pages hold ``page + this`` in the pgmap slot.
    page_lru_offset: int
    #: Feature bits, each named after the kernel change that introduced it:
    #: "section_taint_zone_device" (v5.12), "pgmap_nr_range" (v5.10),
    #: "pgmap_vmemmap_shift" (v5.17), "pfn_to_online_page_fn" (v5.12, out of
    #: line), "pgmap_pfn_valid" (v5.12), "folio_pgmap" (v6.15), "usage_rcu" (v6.8),
    #: "altmap_inaccessible" (v6.9), "pgmap_ref_pointer" (< 5.11), "memory_blocks",
    #: "page_type_pgty" (v6.12 ``enum pagetype``), "page_type_base" (the older
    #: ``PAGE_TYPE_BASE`` encoding), "pg_vmemmap_self_hosted" (v6.1), "memmap_on_memory".
    features: tuple[str, ...] = ()

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @property
    def pfn_section_shift(self) -> int:
        return self.section_size_bits - self.page_shift

    @property
    def pages_per_section(self) -> int:
        return 1 << self.pfn_section_shift

    @property
    def pages_per_subsection(self) -> int:
        # SUBSECTION_SHIFT is 21 on every architecture (include/linux/mmzone.h).
        return 1 << (21 - self.page_shift)

    @property
    def subsections_per_section(self) -> int:
        return 1 << (self.section_size_bits - 21)

    def has(self, feature: str) -> bool:
        return feature in self.features


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What was opened: a live kernel or a dump."""

    #: "live" or "vmcore".
    kind: str
    path: str
    #: "kcore", "elf", "kdump" or "snapshot" (a saved snapshot re-classified).
    format: str = ""
    #: For dumps: the highest PFN the dump holds, when known.
    dump_max_pfn: int | None = None
    #: Where types and symbols came from: ``"dwarf:/path/vmlinux"`` or
    #: ``"btf:/sys/kernel/btf/vmlinux kallsyms:/proc/kallsyms"`` ("" when unknown).
    debuginfo: str = ""


def _section_flag(name: str) -> property:
    """A read-only ``Section`` property: is ``SECTION_<name>`` among its flags."""
    return property(lambda section: name in section.flags, doc=f"SECTION_{name} is set.")


@dataclass(slots=True)
class Section:
    """One ``struct mem_section`` that is present or otherwise non-empty.

    Treated as immutable like every snapshot record, but not ``frozen``: it is the one
    record made per section (thousands per TiB of pmem) and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) costs a multiple of a plain one,
    which a live ``classify`` of the 1 TiB layout in a TCG guest feels (README §
    Performance, measured by scripts/bench_classify.py). Never hashed.
    """

    section_nr: int
    #: The raw ``section_mem_map`` word (flags in the low bits).
    section_mem_map: int
    #: Decoded flag names without the ``SECTION_`` prefix, e.g. ("MARKED_PRESENT", "HAS_MEM_MAP").
    flags: tuple[str, ...]
    #: Address of ``ms->usage`` (0 if NULL).
    usage: int
    #: ``usage->subsection_map`` as an integer, bit 0 = lowest 2 MiB; ``None``
    #: if usage is NULL or could not be read.
    subsection_map: int | None
    #: ``(section_mem_map & SECTION_MAP_MASK) == vmemmap`` (SPARSEMEM_VMEMMAP).
    map_consistent: bool = True
    #: Live only: the section word or usage changed between two reads.
    in_flux: bool = False

    def has_flag(self, name: str) -> bool:
        return name in self.flags

    #: ``present_section()``: SECTION_MARKED_PRESENT.
    present = _section_flag("MARKED_PRESENT")
    #: ``valid_section()``: SECTION_HAS_MEM_MAP.
    valid = _section_flag("HAS_MEM_MAP")
    #: ``online_section()``: SECTION_IS_ONLINE.
    online = _section_flag("IS_ONLINE")
    #: ``early_section()``: SECTION_IS_EARLY.
    early = _section_flag("IS_EARLY")
    #: SECTION_TAINT_ZONE_DEVICE (since v5.12).
    taint_zone_device = _section_flag("TAINT_ZONE_DEVICE")


@dataclass(frozen=True, slots=True)
class MemoryBlock:
    """One ``struct memory_block`` (drivers/base/memory.c)."""

    block_id: int
    start_section_nr: int
    nr_sections: int
    #: "online", "offline", "going-offline", "going-online", or "unknown(N)".
    state: str
    nid: int = -1
    #: Zone name the block was onlined to, when known.
    zone: str = ""
    #: memmap_on_memory: the block's first PFNs that hold its own memmap
    #: (``memory_block->nr_vmemmap_pages``, or ``->altmap->free`` since v6.6); 0 without.
    nr_vmemmap_pages: int = 0
    #: What the first of those struct pages carries, as read: "+"-joined page-flag names
    #: ("vmemmap_self_hosted+reserved" on 6.1), "none", or "" when not read.
    vmemmap_marker: str = ""


@dataclass(frozen=True, slots=True)
class Altmap:
    """``struct vmem_altmap`` of a dev_pagemap (all fields, even if not valid)."""

    base_pfn: int
    end_pfn: int
    reserve: int
    free: int
    align: int
    alloc: int
    #: ``pgmap->flags & PGMAP_ALTMAP_VALID``.
    valid: bool
    inaccessible: bool = False


@dataclass(frozen=True, slots=True)
class PgmapRange:
    """One ``pgmap->ranges[i]``, as PFNs (end exclusive)."""

    index: int
    start_pfn: int
    end_pfn: int
    #: ``index < pgmap->nr_range``: memremap_pages() finished this range.
    complete: bool


@dataclass(frozen=True, slots=True)
class PageSample:
    """Raw words of one struct page that a reader looked at.

    Only raw values are stored; :mod:`subsecinspect.snapshot.pageinit` decides.
    """

    pfn: int
    status: MemmapStatus
    flags: int = 0
    #: The pgmap slot (``page->pgmap`` / ``compound_head`` / ``folio->pgmap``).
    pgmap_slot: int = 0
    refcount: int = 0
    mapcount: int = 0
    #: For a tail (slot bit 0 set): the head page's flags and pgmap slot.
    head_flags: int | None = None
    head_pgmap_slot: int | None = None
    #: Why the read failed (drgn's FaultError text), for evidence.
    error: str = ""


@dataclass(frozen=True, slots=True)
class RangeMemmap:
    """Memmap evidence for one pgmap range: readability and the initialised frontier."""

    pgmap: int
    range_index: int
    #: ``pfn_first()``: range start, plus ``vmem_altmap_offset()`` for range 0.
    first_pfn: int
    end_pfn: int
    #: First PFN in ``[first_pfn, end_pfn)`` whose struct page fails the
    #: fingerprint (``end_pfn`` if all pass); ``None`` when no binary search
    #: was possible (memmap unreadable) or needed.
    frontier_pfn: int | None
    #: Readability per PFN span: ``((start_pfn, end_pfn, status), ...)``,
    #: sorted, covering ``[range start, end_pfn)`` including the altmap part.
    readability: tuple[tuple[int, int, MemmapStatus], ...] = ()
    #: The struct pages actually read for this range (binary search, probes).
    samples: tuple[PageSample, ...] = ()
    #: Fingerprint of the altmap ``free`` (C5b) pages, when read: "lru_self" if
    #: the slot holds page+lru offset and zone==ZONE_DEVICE, "other" otherwise.
    altmap_free_fingerprint: str = ""
    #: The first read fault met while probing readability (drgn's or the BPF reader's
    #: message), ``""`` if none: the evidence of MEMMAP_UNREADABLE / NOT_CAPTURED.
    error: str = ""


@dataclass(frozen=True, slots=True)
class DevPagemap:
    """One ``struct dev_pagemap`` found in ``pgmap_array``."""

    address: int
    #: ``enum memory_type`` name, e.g. "MEMORY_DEVICE_FS_DAX".
    type: str
    flags: int
    #: ``pgmap->nr_range`` (-1 before v5.10, where there is a single ``res``).
    nr_range: int
    #: The ranges, including the one in progress past ``nr_range``.
    ranges: tuple[PgmapRange, ...]
    altmap: Altmap
    vmemmap_shift: int = 0
    #: ``percpu_ref_kill()`` has run (``__PERCPU_REF_DEAD``): memunmap_pages().
    ref_dying: bool = False
    #: ``(first_pfn, last_pfn_inclusive)`` spans where pgmap_array points here.
    xa_spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ZoneSpan:
    """``NODE_DATA(nid)->node_zones[zone]`` span, PFNs (end exclusive)."""

    nid: int
    zone: str
    zone_idx: int
    start_pfn: int
    end_pfn: int
    present_pages: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read from one target, in one pass."""

    kernel: KernelInfo
    target: TargetInfo
    sections: tuple[Section, ...]
    pgmaps: tuple[DevPagemap, ...] = ()
    memory_blocks: tuple[MemoryBlock, ...] = ()
    zones: tuple[ZoneSpan, ...] = ()
    memmaps: tuple[RangeMemmap, ...] = ()
    #: Counters about the read itself (e.g. "struct_pages_read").
    stats: tuple[tuple[str, int], ...] = ()
    #: Human-readable warnings from the readers (damaged structures, ...).
    warnings: tuple[str, ...] = ()
    #: ``PageOffline()`` pages found in online hot-added sections, ``(start_pfn, end_pfn)``
    #: sorted and disjoint (virtio-mem's unplugged sub-blocks, ballooned pages).
    logically_offline: tuple[tuple[int, int], ...] = ()
    #: Online sections whose page types were read (``logically_offline`` is complete
    #: there and only there), as ``(first_nr, last_nr)`` runs.
    page_types_read: tuple[tuple[int, int], ...] = ()
    format: int = field(default=SNAPSHOT_FORMAT)

    def stat(self, name: str) -> int:
        return dict(self.stats).get(name, 0)


# --- JSON round trip -------------------------------------------------------
