"""Read one whole target into a snapshot: the readers in order, then the live guard.

:func:`read_snapshot` reads one target into a :class:`~subsecinspect.snapshot.model.Snapshot`:
sections (mm/sparse.c), pgmaps (mm/memremap.c), zones (mmzone.h), memory
blocks (drivers/base/memory.c) and, per ZONE_DEVICE range, memmap
readability and the initialised frontier (mm/mm_init.c). Reads are bulk; no
drgn Object is made per section or per page. On a live kernel the section
words and pgmap lifecycle fields are re-read after the pages and whatever
changed is marked ``in_flux``.
"""

from __future__ import annotations

import dataclasses
import time

from drgn import Program

from subsecinspect.errors import ReadError
from subsecinspect.kernel.features import build_kernel_info
from subsecinspect.kernel.hotplug_ram import (
    hotplug_features,
    read_logically_offline,
    vmemmap_marker,
)
from subsecinspect.kernel.livemem import attach_device_memmaps
from subsecinspect.kernel.memmap import read_range_memmaps
from subsecinspect.kernel.memory_blocks import read_memory_blocks
from subsecinspect.kernel.nodes import (
    check_zones_against_sections,
    read_zones,
    validate_page_flags_layout,
)
from subsecinspect.kernel.pagemap import PERCPU_REF_DEAD, pgmap_live_state, read_pgmaps
from subsecinspect.kernel.pages import PageReader
from subsecinspect.kernel.sections import SectionWords, changed_sections, read_sections
from subsecinspect.snapshot.model import (
    DevPagemap,
    KernelInfo,
    PgmapRange,
    Section,
    Snapshot,
    TargetInfo,
)

__all__ = ("read_snapshot",)


def _pgmap_sections(ki: KernelInfo, pg: DevPagemap) -> set[int]:
    out: set[int] = set()
    spans = [(r.start_pfn, r.end_pfn - 1) for r in pg.ranges] + list(pg.xa_spans)
    for a, b in spans:
        out.update(range(a >> ki.pfn_section_shift, (b >> ki.pfn_section_shift) + 1))
    return out


def _live_guard(
    prog: Program,
    ki: KernelInfo,
    sections: list[Section],
    words: SectionWords,
    pgmaps: list[DevPagemap],
) -> tuple[list[Section], list[str]]:
    """Re-read section words, usage maps, nr_range and ref; mark what moved (§4.3 step 6)."""
    moved = changed_sections(prog, ki, sections, words)
    warnings: list[str] = []
    for pg in pgmaps:
        state = pgmap_live_state(prog, pg.address)
        before = (pg.nr_range, pg.ref_dying)
        if state is None:
            changed = True
        else:
            changed = (state[0], bool(state[1] & PERCPU_REF_DEAD)) != before
        if changed:
            warnings.append(f"pgmap {pg.address:#x} changed while it was read (IN_FLUX)")
            moved |= _pgmap_sections(ki, pg)
    if not moved:
        return sections, warnings
    warnings.append(f"{len(moved)} section(s) changed while they were read (IN_FLUX)")
    have = {s.section_nr for s in sections}
    out = [dataclasses.replace(s, in_flux=True) if s.section_nr in moved else s for s in sections]
    # A section that appeared meanwhile is recorded as in flux too.
    for nr in sorted(moved - have):
        out.append(Section(section_nr=nr, section_mem_map=0, flags=(), usage=0,
                           subsection_map=None, in_flux=True))
    out.sort(key=lambda s: s.section_nr)
    return out, warnings


def _check_complete_ranges(
    ki: KernelInfo, sections: list[Section], pgmaps: list[DevPagemap]
) -> list[str]:
    """Warn where a finished pgmap range lacks its sections or subsection bits.

    memremap_pages() counts a range in nr_range only after sparse_add_section() set
    its subsection bits, and teardown kills the ref before clearing them, so a live,
    complete range over a missing bit means the section data read are damaged.
    Only the sections each complete range overlaps are looked at, O(1) each.
    """
    by_nr = {s.section_nr: s for s in sections}
    pps, ppsub = ki.pages_per_section, ki.pages_per_subsection
    full = (1 << ki.subsections_per_section) - 1
    out: list[str] = []

    def check(pg: DevPagemap, r: PgmapRange, nr: int, want: int) -> None:
        sec = by_nr.get(nr)
        if sec is None or not sec.valid:
            out.append(f"section {nr} holds complete range {r.index} of pgmap "
                       f"{pg.address:#x} but is not valid (damaged mem_section?)")
        elif sec.subsection_map is not None and not sec.early:
            if sec.subsection_map & want != want:
                out.append(
                    f"section {nr}: subsection map {sec.subsection_map:#x} lacks "
                    f"bits {want & ~sec.subsection_map:#x} of complete range {r.index} "
                    f"of pgmap {pg.address:#x} (damaged mem_section_usage?)"
                )

    def mask(r: PgmapRange, nr: int) -> int:
        """subsection_mask() of the range's part of section *nr*."""
        base = nr * pps
        a, b = max(r.start_pfn, base), min(r.end_pfn, base + pps)
        first, last = (a - base) // ppsub, (b - 1 - base) // ppsub
        return (1 << (last + 1)) - (1 << first) if last >= first else 0

    for pg in pgmaps:
        if pg.ref_dying:
            continue
        for r in pg.ranges:
            if not r.complete:
                continue
            first_nr, last_nr = r.start_pfn // pps, (r.end_pfn - 1) // pps
            for nr in range(first_nr, last_nr + 1):
                if first_nr < nr < last_nr:
                    # Strictly inside the range: every bit; the common healthy case is
                    # filtered here without building a message.
                    sec = by_nr.get(nr)
                    if (sec is not None and "HAS_MEM_MAP" in sec.flags
                            and (sec.subsection_map is None or "IS_EARLY" in sec.flags
                                 or sec.subsection_map & full == full)):
                        continue
                    check(pg, r, nr, full)
                else:
                    check(pg, r, nr, mask(r, nr))
    return out


def read_snapshot(prog: Program, target: TargetInfo, bpf_memmap: bool = True) -> Snapshot:
    """Read everything the classifier needs from *prog* in one pass.

    Live, the memmaps that ``/proc/kcore`` cannot read are read through BPF unless
    *bpf_memmap* is false (:mod:`subsecinspect.kernel.livemem`).

    :raises UnsupportedKernelError: not SPARSEMEM_VMEMMAP, unknown layout.
    :raises ReadError: the ``mem_section`` root table is unreadable.
    """
    t0 = time.monotonic()
    ki = build_kernel_info(prog)
    ki = dataclasses.replace(ki, features=(*ki.features, *hotplug_features(prog)))
    warnings: list[str] = []
    if ki.zone_device is None:
        warnings.append("kernel has no ZONE_DEVICE (CONFIG_ZONE_DEVICE=n): cases 2-5 cannot occur")
    reader = PageReader(prog, ki)
    sections, w, words = read_sections(prog, ki)
    warnings += w
    pgmaps, w, xa_damaged = read_pgmaps(prog, ki) if ki.zone_device is not None else ([], [], 0)
    warnings += w
    if xa_damaged:
        warnings.append(
            "pgmap_array is damaged: ZONE_DEVICE ranges may be missing, so present sections "
            "that are not online cannot be told from offline RAM; if this is a kdump, take it "
            "with makedumpfile -d 23 (or -d 0), which keeps slab pages"
        )
    warnings += _check_complete_ranges(ki, sections, pgmaps)
    with attach_device_memmaps(prog, ki, pgmaps, target, bpf_memmap) as (bpf_stats, w):
        warnings += w
        zones, w = read_zones(prog, ki)
        warnings += w
        present_pages = sum(z.present_pages for z in zones)
        if present_pages > 0 and not any(s.present for s in sections):
            raise ReadError(
                f"no present section in mem_section although the zones hold {present_pages} "
                "present pages: the mem_section roots are damaged"
            )
        warnings += check_zones_against_sections(ki, zones, sections)
        overrides, w = validate_page_flags_layout(reader, zones, sections, pgmaps)
        warnings += w
        if overrides:
            ki = dataclasses.replace(ki, zones_pgshift=overrides["zones_pgshift"],
                                     nodes_pgshift=overrides["nodes_pgshift"])
            reader.ki = ki
        blocks, w = read_memory_blocks(prog, ki)
        warnings += w
        memmaps, w = read_range_memmaps(reader, target, pgmaps, tuple(zones))
        warnings += w
        hosted = set().union(*(_pgmap_sections(ki, pg) for pg in pgmaps))
        offline, types_read, w = read_logically_offline(reader, sections, hosted)
        warnings += w
        blocks = [dataclasses.replace(b, vmemmap_marker=vmemmap_marker(reader, b))
                  if b.nr_vmemmap_pages and b.state == "online" else b for b in blocks]
        if target.kind == "live":
            sections, w = _live_guard(prog, ki, sections, words, pgmaps)
            warnings += w
    stats = (
        ("struct_pages_read", reader.pages_read),
        ("sections", len(sections)),
        ("pgmaps", len(pgmaps)),
        ("pgmap_array_unreadable_nodes", xa_damaged),
        # sections of hot-added online RAM whose page types were bulk-read (hotplug_ram)
        ("page_type_sections_read", sum(b - a + 1 for a, b in types_read)),
        *sorted(bpf_stats.items()),
        ("read_ms", int((time.monotonic() - t0) * 1000)),
    )
    return Snapshot(
        kernel=ki,
        target=target,
        sections=tuple(sections),
        pgmaps=tuple(pgmaps),
        memory_blocks=tuple(blocks),
        zones=tuple(zones),
        memmaps=tuple(memmaps),
        stats=stats,
        warnings=tuple(warnings),
        logically_offline=offline,
        page_types_read=types_read,
    )
