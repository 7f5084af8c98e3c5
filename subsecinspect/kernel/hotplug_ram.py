"""Hot-added RAM: logically offline pages and memmap_on_memory's self-hosted vmemmap.

Kernel sources mirrored: include/linux/page-flags.h (``PageOffline()``, the page type
encoding, ``PG_vmemmap_self_hosted``), include/linux/memory.h (``struct memory_block``:
``nr_vmemmap_pages`` / ``altmap``), mm/memory_hotplug.c (``mhp_init_memmap_on_memory()``,
``memory_block_online()`` in drivers/base/memory.c) and drivers/virtio/virtio_mem.c (it
marks unplugged sub-blocks of online memory blocks ``PageOffline()``).

Page types are read in bulk: one read of a section's memmap and a byte-strided slice of
the ``page_type`` word, never a drgn Object per page, and only in online sections that
are not early (hot-added RAM: virtio-mem, pc-dimm, kmem). Boot RAM and ZONE_DEVICE are not
read, so the cost of ``classify`` on a pmem layout is unchanged. Limits: PageOffline pages
in boot RAM (a balloon driver) are not looked for; a live sub-block plug or unplug during
the read is not caught by the live guard (it re-reads section words, and virtio-mem changes
page types inside sections that stay online).
"""

from __future__ import annotations

import re

import drgn
from drgn import Object, Program, offsetof

from subsecinspect.kernel.features import enum_value
from subsecinspect.kernel.pages import PageReader
from subsecinspect.snapshot.model import MemoryBlock, Section
from subsecinspect.snapshot.pageinit import page_address

__all__ = (
    "hotplug_features",
    "memory_block_vmemmap_pages",
    "page_type_offline",
    "read_logically_offline",
    "vmemmap_marker",
)

#: include/linux/page-flags.h, v4.18 .. v6.11 (macros, not in DWARF): a type is set when
#: its bit is *clear* under PAGE_TYPE_BASE: ``(page_type & (BASE | flag)) == BASE``.
_PAGE_TYPE_BASE = 0xF000_0000
_PG_OFFLINE_BIT = 0x0000_0100


def _has_any_member(prog: Program, type_name: str, *members: str) -> bool:
    """Whether *type_name* has one of *members*, inside anonymous unions too
    (``page_type`` shares an anonymous union with ``_mapcount``)."""
    try:
        t = prog.type(type_name)
    except LookupError:
        return False
    return any(t.has_member(m) for m in members)


def page_type_offline(prog: Program) -> tuple[str, int] | None:
    """How this kernel encodes ``PageOffline()``: ``("pgty", PGTY_offline)`` or
    ``("base", PG_offline)``; ``None`` when neither is known.

    Since Linux kernel commit 4ffca5a96678 ("mm: support only one page_type per page")
    (in v6.12) the top byte of ``page_type`` is one ``enum pagetype`` value (DWARF:
    ``PGTY_offline``, 0xf1 on 6.12 and 7.2). Before, ``PG_offline`` was a #define bit that
    is *cleared* under PAGE_TYPE_BASE (5.10, 6.1); v6.10-v6.11 used another encoding
    (``enum pagetype`` with ``PG_offline``), not in the lab: reported as unknown.
    """
    pgty = enum_value(prog, "PGTY_offline")
    if pgty is not None:
        return "pgty", pgty
    if enum_value(prog, "PG_offline") is None and _has_any_member(prog, "struct page", "page_type"):
        return "base", _PG_OFFLINE_BIT
    return None


def hotplug_features(prog: Program) -> tuple[str, ...]:
    """Feature bits of this module, for :attr:`KernelInfo.features`."""
    feats: list[str] = []
    enc = page_type_offline(prog)
    if enc is not None:
        feats.append("page_type_pgty" if enc[0] == "pgty" else "page_type_base")
    # Since Linux kernel commit 66361095129b ("mm: memory_hotplug: make
    # hugetlb_optimize_vmemmap compatible with memmap_on_memory") (in v6.1).
    if enum_value(prog, "PG_vmemmap_self_hosted") is not None:
        feats.append("pg_vmemmap_self_hosted")
    # Since Linux kernel commit a08a2ae34613 ("mm,memory_hotplug: allocate memmap from the
    # added memory range") (in v5.13); 5.10 has no memmap_on_memory at all.
    if _has_any_member(prog, "struct memory_block", "nr_vmemmap_pages", "altmap"):
        feats.append("memmap_on_memory")
    return tuple(feats)


def memory_block_vmemmap_pages(mb: Object) -> int:
    """The PFNs at the start of *mb* that hold its memmap (``memory_block_online()``).

    :param mb: ``struct memory_block``
    Since Linux kernel commit 1a8c64e11043 ("mm/memory_hotplug: embed vmem_altmap details
    in memory block") (in v6.6) the count is ``mb->altmap->free``; v5.13-v6.5 store
    ``nr_vmemmap_pages``; 0 before and for blocks without memmap_on_memory.
    """
    t = mb.type_
    if t.has_member("altmap"):
        alt = mb.altmap.read_()
        return int(alt.free.value_()) if alt.value_() else 0
    if t.has_member("nr_vmemmap_pages"):
        return int(mb.nr_vmemmap_pages.value_())
    return 0


def _flag_names(prog: Program, flags: int) -> str:
    names = []
    for name, label in (("PG_vmemmap_self_hosted", "vmemmap_self_hosted"),
                        ("PG_reserved", "reserved")):
        bit = enum_value(prog, name)
        if bit is not None and flags >> bit & 1:
            names.append(label)
    return "+".join(names) or "none"


def vmemmap_marker(reader: PageReader, block: MemoryBlock) -> str:
    """The self-hosted marker of *block*'s first vmemmap page, as read.

    ``mhp_init_memmap_on_memory()`` sets ``PageVmemmapSelfHosted()`` (6.1+); 6.1 leaves
    the pages PageReserved from ``memmap_init_range()``, 6.12 initialises them
    PageOffline and clears it (measured: kpageflags RESERVED|OWNER_PRIVATE on 6.1,
    OWNER_PRIVATE on 6.12; today-memory-notes.md).
    """
    pfn = block.start_section_nr * reader.ki.pages_per_section
    try:
        data = reader.raw(pfn)
    except drgn.FaultError:
        return "unreadable"
    return _flag_names(reader.prog, reader.flags_of(data, 0))


_BASE_TOP = bytes(1 if i & 0xF0 == 0xF0 else 0 for i in range(256))
_BASE_BIT = bytes(0 if i & (_PG_OFFLINE_BIT >> 8) else 1 for i in range(256))
_RUN = re.compile(b"\x01+")


def _offline_runs(data: bytes, off: int, size: int, enc: tuple[str, int]) -> list[tuple[int, int]]:
    """Index runs ``[a, b)`` of struct pages in *data* whose page type is offline."""
    top = data[off + 3::size]  # little-endian: byte 3 is page_type >> 24
    if enc[0] == "pgty":
        hit = top.translate(bytes(1 if i == enc[1] else 0 for i in range(256)))
    else:
        n = len(top)
        both = int.from_bytes(top.translate(_BASE_TOP), "little") & int.from_bytes(
            data[off + 1::size].translate(_BASE_BIT), "little")
        hit = both.to_bytes(n, "little")
    return [(m.start(), m.end()) for m in _RUN.finditer(hit)]


def _wanted(sections: list[Section], hosted: set[int]) -> list[int]:
    """Online, valid, non-early sections no pgmap touches: hot-added RAM."""
    return [s.section_nr for s in sections
            if s.online and s.valid and not s.early and s.section_nr not in hosted]


def read_logically_offline(
    reader: PageReader, sections: list[Section], hosted: set[int]
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], list[str]]:
    """``PageOffline()`` spans of hot-added online RAM, the sections read (each one bulk
    read of its whole memmap), warnings.

    *hosted*: section numbers a dev_pagemap touches (ZONE_DEVICE, never read here).
    """
    prog, ki = reader.prog, reader.ki
    enc = page_type_offline(prog)
    if enc is None:
        return (), (), ["page type encoding unknown: RAM_LOGICALLY_OFFLINE not decided"]
    off = offsetof(prog.type("struct page"), "page_type")
    pps, size = ki.pages_per_section, ki.struct_page_size
    spans: list[tuple[int, int]] = []
    done: list[tuple[int, int]] = []
    warnings: list[str] = []
    for nr in _wanted(sections, hosted):
        try:
            # Not reader.raw_span(): struct_pages_read counts the fingerprint's samples
            # (README § Performance); these bulk reads are counted by the caller.
            data = prog.read(page_address(ki, nr * pps), pps * size)
        except drgn.FaultError as e:
            warnings.append(f"memmap of online section {nr} unreadable: {e}")
            continue
        base = nr * pps
        for a, b in _offline_runs(data, off, size, enc):
            if spans and spans[-1][1] == base + a:
                spans[-1] = (spans[-1][0], base + b)
            else:
                spans.append((base + a, base + b))
        if done and done[-1][1] == nr - 1:
            done[-1] = (done[-1][0], nr)
        else:
            done.append((nr, nr))
    return tuple(spans), tuple(done), warnings
