"""Kernel features: constants, enum values, member offsets and feature bits.

Everything is detected from the target's debug info (DWARF enums, members,
symbols) and VMCOREINFO, never parsed from the release string, because distro
stable trees backport (Debian 6.1.192 carries 6.8's RCU ``mem_section_usage``).
Results are cached in ``prog.cache``.

Kernel sources mirrored: ``include/linux/mmzone.h`` (section flags,
SUBSECTION_SHIFT), ``include/linux/page-flags-layout.h`` (ZONES_PGSHIFT,
NODES_PGSHIFT), ``include/linux/memremap.h`` (``enum memory_type``,
``struct dev_pagemap``), ``include/linux/mm_types.h`` (``struct page``).
"""

from __future__ import annotations

from typing import Any

import drgn
from drgn import Program, TypeKind, offsetof, sizeof

from subsecinspect.errors import ReadError, UnsupportedKernelError
from subsecinspect.snapshot.model import KernelInfo

__all__ = (
    "PGMAP_ALTMAP_VALID",
    "SUBSECTION_SHIFT",
    "build_kernel_info",
    "constant",
    "enum_value",
    "has_symbol",
    "memory_type_names",
    "page_flags_layout",
    "section_flag_masks",
    "section_map_mask",
)

#: include/linux/mmzone.h: 2 MiB on every architecture (a macro, not in DWARF).
SUBSECTION_SHIFT = 21
#: include/linux/memremap.h: ``#define PGMAP_ALTMAP_VALID (1 << 0)``.
PGMAP_ALTMAP_VALID = 1 << 0


def constant(prog: Program, name: str, default: int | None = None) -> int | None:
    """Value of an object, enumerator or VMCOREINFO constant, or *default*."""
    try:
        return prog[name].value_()
    except (KeyError, LookupError, drgn.FaultError, ValueError):
        return default


def enum_value(prog: Program, name: str) -> int | None:
    """Value of the enumerator *name* (e.g. ``ZONE_DEVICE``), ``None`` if absent."""
    try:
        obj = prog.constant(name)
    except (KeyError, LookupError):
        return None
    return obj.value_()


def has_symbol(prog: Program, name: str) -> bool:
    """Whether *name* is a symbol (function or variable) of the kernel image."""
    try:
        prog.symbol(name)
    except (KeyError, LookupError):
        return False
    return True


def _has_member(prog: Program, type_name: str, member: str) -> bool:
    try:
        return prog.type(type_name).has_member(member)
    except LookupError:
        return False


def section_flag_masks(prog: Program) -> dict[str, int]:
    """Section flag name (without ``SECTION_``) -> mask, plus ``MAP_MASK``.

    Mirrors the ``SECTION_*`` definitions in include/linux/mmzone.h.
    """
    try:
        return prog.cache["subsecinspect_section_flags"]
    except KeyError:
        pass
    masks: dict[str, int] = {}
    try:
        enum_type = prog.constant("SECTION_MARKED_PRESENT_BIT").type_
    except (KeyError, LookupError):
        # Before Linux kernel commit ed7802dd48f7 ("mm: memory_hotplug:
        # enumerate all supported section flags") (in v6.0) the flags were
        # macros. Their values never changed: PRESENT 0, HAS_MEM_MAP 1,
        # IS_ONLINE 2 (v4.13), IS_EARLY 3 (v5.3), TAINT_ZONE_DEVICE 4 (v5.12,
        # 1f90a3477df3). A bit is simply never set before its introduction.
        masks = {
            "MARKED_PRESENT": 0x1,
            "HAS_MEM_MAP": 0x2,
            "IS_ONLINE": 0x4,
            "IS_EARLY": 0x8,
            "MAP_MASK": ~0x1F & 0xFFFFFFFFFFFFFFFF,
        }
        if _taint_by_function(prog):
            masks["TAINT_ZONE_DEVICE"] = 0x10
    else:
        for e in enum_type.enumerators or ():
            if e.name == "SECTION_MAP_LAST_BIT":
                masks["MAP_MASK"] = ~((1 << e.value) - 1) & 0xFFFFFFFFFFFFFFFF
            elif e.name.startswith("SECTION_") and e.name.endswith("_BIT"):
                masks[e.name[len("SECTION_") : -len("_BIT")]] = 1 << e.value
        if "MAP_MASK" not in masks:
            raise UnsupportedKernelError("section flag enum without SECTION_MAP_LAST_BIT")
    prog.cache["subsecinspect_section_flags"] = masks
    return masks


def _taint_by_function(prog: Program) -> bool:
    # SECTION_TAINT_ZONE_DEVICE came with the same v5.12 series that moved
    # pfn_to_online_page() out of line (9f605f260594, 1f90a3477df3); before
    # v6.0 the flag is a macro, so the out-of-line function is the witness.
    return has_symbol(prog, "pfn_to_online_page") and enum_value(prog, "ZONE_DEVICE") is not None


def section_map_mask(prog: Program) -> int:
    """``SECTION_MAP_MASK``."""
    return section_flag_masks(prog)["MAP_MASK"]


def memory_type_names(prog: Program) -> dict[int, str]:
    """``enum memory_type`` value -> name (values changed in v5.7 and v6.0)."""
    try:
        return prog.cache["subsecinspect_memory_types"]
    except KeyError:
        pass
    names: dict[int, str] = {}
    try:
        t = prog.type("enum memory_type")
        for e in t.enumerators or ():
            names[e.value] = e.name
    except LookupError:
        pass
    prog.cache["subsecinspect_memory_types"] = names
    return names


def _order_base_2(n: int) -> int:
    return (n - 1).bit_length() if n > 1 else 0


def page_flags_layout(prog: Program) -> tuple[int, int, int, int]:
    """Computed ``(ZONES_PGSHIFT, ZONES_WIDTH, NODES_PGSHIFT, NODES_WIDTH)``.

    Mirrors include/linux/page-flags-layout.h and mmzone.h: fields are packed
    from the top bit: [SECTIONS][NODES][ZONES]. SECTIONS_WIDTH is 0 with
    SPARSEMEM_VMEMMAP (the only model ZONE_DEVICE supports). The node field is
    absent when ``section_to_node_table`` exists (NODE_NOT_IN_PAGE_FLAGS).
    NODES_SHIFT is not in DWARF; ``MAX_NUMNODES = sizeof(nodemask_t) * 8`` is
    exact when it is at least 64. The caller validates this on real pages
    (kernel-semantics §3) and corrects it if needed.
    """
    bits_per_long = 8 * sizeof(prog.type("unsigned long"))
    nr_zones = enum_value(prog, "__MAX_NR_ZONES") or 1
    zones_width = _order_base_2(nr_zones)
    if has_symbol(prog, "section_to_node_table"):
        nodes_width = 0
    else:
        try:
            max_numnodes = 8 * sizeof(prog.type("nodemask_t"))
        except LookupError:
            max_numnodes = 1
        nodes_width = _order_base_2(max_numnodes)
    # SECTIONS_WIDTH is 0 with SPARSEMEM_VMEMMAP, which build_kernel_info() requires.
    sections_width = 0
    nodes_pgoff = bits_per_long - sections_width - nodes_width
    zones_pgoff = nodes_pgoff - zones_width
    return zones_pgoff, zones_width, nodes_pgoff, nodes_width


def _pgmap_slot_offset(prog: Program) -> int:
    page = prog.type("struct page")
    # Since the 6.15 move of the pgmap to struct folio ("mm: ... folio->pgmap"),
    # struct page has no pgmap member; the same word (first after flags) is
    # compound_head / compound_info / _unused_pgmap_compound_head.
    for name in ("pgmap", "compound_head", "compound_info", "_unused_pgmap_compound_head"):
        if page.has_member(name):
            return offsetof(page, name)
    raise UnsupportedKernelError("struct page has no pgmap/compound_head word")


def _compound_info_mask(prog: Program) -> bool:
    # Since Linux kernel commit 8c846c879e22 ("mm: rework compound_head() for
    # power-of-2 sizeof(struct page)") (in v7.1), a tail's compound_info may be
    # a mask (head = tail & mask) instead of head | 1.
    page = prog.type("struct page")
    size = sizeof(page)
    return (
        page.has_member("compound_info")
        and size & (size - 1) == 0
        and _has_member(prog, "struct zone", "vmemmap_tails")
    )


def _features(prog: Program) -> tuple[str, ...]:
    feats: list[str] = []
    masks = section_flag_masks(prog)
    if "TAINT_ZONE_DEVICE" in masks:
        feats.append("section_taint_zone_device")
    if _has_member(prog, "struct dev_pagemap", "nr_range"):
        feats.append("pgmap_nr_range")
    if _has_member(prog, "struct dev_pagemap", "vmemmap_shift"):
        feats.append("pgmap_vmemmap_shift")
    if has_symbol(prog, "pfn_to_online_page"):
        feats.append("pfn_to_online_page_fn")
    if has_symbol(prog, "pgmap_pfn_valid"):
        feats.append("pgmap_pfn_valid")
    if not _has_member(prog, "struct page", "pgmap") and _has_member(
        prog, "struct folio", "pgmap"
    ):
        feats.append("folio_pgmap")
    if _has_member(prog, "struct mem_section_usage", "rcu"):
        feats.append("usage_rcu")
    if _has_member(prog, "struct mem_section_usage", "subsection_map"):
        feats.append("subsection_map")
    if _has_member(prog, "struct vmem_altmap", "inaccessible"):
        feats.append("altmap_inaccessible")
    try:
        ref_t = prog.type("struct dev_pagemap").member("ref").type
        if ref_t.unaliased_kind() == TypeKind.POINTER:
            feats.append("pgmap_ref_pointer")
    except LookupError:
        pass
    if has_symbol(prog, "memory_blocks"):
        feats.append("memory_blocks")
    if _compound_info_mask(prog):
        feats.append("compound_info_mask")
    return tuple(feats)


def _release(prog: Program) -> str:
    try:
        return prog["UTS_RELEASE"].string_().decode(errors="replace")
    except (KeyError, LookupError, drgn.FaultError):
        pass
    try:
        return prog["init_uts_ns"].name.release.string_().decode(errors="replace")
    except (KeyError, LookupError, drgn.FaultError):
        return "unknown"


def build_kernel_info(prog: Program, **overrides: Any) -> KernelInfo:
    """Detect every constant and feature of the target kernel.

    *overrides* replace computed fields (the validated zone/node shifts).

    :raises UnsupportedKernelError: no SPARSEMEM (no ``mem_section``), or no
        SPARSEMEM_VMEMMAP ``vmemmap`` base.
    """
    try:
        prog["mem_section"]
    except (KeyError, LookupError):
        raise UnsupportedKernelError(
            "kernel has no mem_section symbol (not SPARSEMEM); only SPARSEMEM kernels "
            "can host ZONE_DEVICE"
        ) from None
    vmemmap = constant(prog, "vmemmap")
    if vmemmap is None:
        # x86_64 keeps the (KASLR-randomised) base in vmemmap_base; drgn's "vmemmap"
        # may also be derived from mem_section, which fails when that is damaged.
        vmemmap = constant(prog, "vmemmap_base")
    if vmemmap is None:
        if _has_member(prog, "struct mem_section_usage", "subsection_map"):
            raise ReadError("cannot determine the vmemmap base (mem_section damaged?)")
        raise UnsupportedKernelError("no vmemmap base (not SPARSEMEM_VMEMMAP)")
    page_shift = constant(prog, "PAGE_SHIFT", 12) or 12
    ssb = constant(prog, "SECTION_SIZE_BITS")
    mpb = constant(prog, "MAX_PHYSMEM_BITS")
    if ssb is None or mpb is None:
        raise UnsupportedKernelError("SECTION_SIZE_BITS/MAX_PHYSMEM_BITS missing from VMCOREINFO")
    nr_mem_sections = 1 << (mpb - ssb)
    highest = constant(prog, "__highest_present_section_nr")
    if highest is None or not 0 <= highest < nr_mem_sections:
        # Absent before v4.13 (c4e1be9ec113); out of range only in a damaged dump.
        highest = nr_mem_sections - 1
    zones_pgshift, zones_width, nodes_pgshift, nodes_width = page_flags_layout(prog)
    page = prog.type("struct page")
    nr_zones = enum_value(prog, "__MAX_NR_ZONES") or 1
    pg_reserved = enum_value(prog, "PG_reserved")
    pg_head = enum_value(prog, "PG_head")
    if pg_reserved is None or pg_head is None:
        raise UnsupportedKernelError("enum pageflags lacks PG_reserved/PG_head")
    mapcount_off = offsetof(page, "_mapcount") if page.has_member("_mapcount") else -1
    values: dict[str, Any] = dict(
        release=_release(prog),
        page_shift=page_shift,
        section_size_bits=ssb,
        max_physmem_bits=mpb,
        struct_page_size=sizeof(page),
        vmemmap=vmemmap,
        highest_present_section_nr=highest,
        zone_device=enum_value(prog, "ZONE_DEVICE"),
        nr_zones=nr_zones,
        zones_pgshift=zones_pgshift,
        zones_mask=(1 << zones_width) - 1,
        nodes_pgshift=nodes_pgshift,
        nodes_mask=(1 << nodes_width) - 1,
        nr_node_ids=constant(prog, "nr_node_ids", 1) or 1,
        pg_reserved=pg_reserved,
        pg_head=pg_head,
        page_flags_offset=offsetof(page, "flags"),
        page_pgmap_offset=_pgmap_slot_offset(prog),
        page_refcount_offset=offsetof(page, "_refcount"),
        page_mapcount_offset=mapcount_off,
        page_lru_offset=offsetof(page, "lru"),
        features=_features(prog),
    )
    values.update(overrides)
    return KernelInfo(**values)
