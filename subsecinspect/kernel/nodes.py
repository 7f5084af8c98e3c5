"""NUMA nodes and zones: ``pglist_data.node_zones[]`` spans, and the page->flags layout check.

Mirrors ``NODE_DATA()`` (include/linux/mmzone.h), ``zone_end_pfn()``, and the
ZONES_PGSHIFT/NODES_PGSHIFT arithmetic of include/linux/page-flags-layout.h,
which is validated on real struct pages as kernel-semantics §3 requires.
"""

from __future__ import annotations

import bisect

import drgn
from drgn import Object, Program

from subsecinspect.kernel.pages import PageReader
from subsecinspect.snapshot.model import DevPagemap, KernelInfo, Section, ZoneSpan

__all__ = (
    "check_zones_against_sections",
    "read_zones",
    "validate_page_flags_layout",
)


def _node_data(prog: Program, nid: int) -> Object | None:
    try:
        node_data = prog["node_data"]
    except (KeyError, LookupError):
        # CONFIG_NUMA=n: a single contig_page_data.
        return prog["contig_page_data"].address_of_() if nid == 0 else None
    p = node_data[nid].read_()
    return p if p.value_() else None


def read_zones(prog: Program, ki: KernelInfo) -> tuple[list[ZoneSpan], list[str]]:
    """Every zone of every node with a ``pglist_data``, including empty ones."""
    zones: list[ZoneSpan] = []
    warnings: list[str] = []
    for nid in range(ki.nr_node_ids):
        try:
            pgdat = _node_data(prog, nid)
            if pgdat is None:
                continue
            for idx, z in enumerate(pgdat.node_zones):
                try:
                    name = z.name.string_().decode(errors="replace")
                except drgn.FaultError:
                    name = f"zone{idx}"
                start = z.zone_start_pfn.value_()
                zones.append(
                    ZoneSpan(
                        nid=nid,
                        zone=name,
                        zone_idx=idx,
                        start_pfn=start,
                        end_pfn=start + z.spanned_pages.value_(),
                        present_pages=z.present_pages.value_(),
                    )
                )
        except drgn.FaultError as e:
            warnings.append(f"NODE_DATA({nid}) is unreadable: {e}")
    return zones, warnings


def _sample_pfns(
    ki: KernelInfo, zone: ZoneSpan, sections: dict[int, Section], dev: list[tuple[int, int]]
) -> list[int]:
    """Up to 5 PFNs of *zone* in online, subsection-valid memory outside every pgmap."""
    out: list[int] = []
    span = zone.end_pfn - zone.start_pfn
    starts = [a for a, _ in dev]
    for k in range(1, 10):
        pfn = zone.start_pfn + span * k // 10
        sec = sections.get(pfn >> ki.pfn_section_shift)
        if sec is None or not sec.online or not sec.valid:
            continue
        if sec.subsection_map is not None and not sec.early:
            bit = (pfn & (ki.pages_per_section - 1)) // ki.pages_per_subsection
            if not (sec.subsection_map >> bit) & 1:
                continue
        i = bisect.bisect_right(starts, pfn) - 1
        if i >= 0 and dev[i][0] <= pfn < dev[i][1]:
            continue
        out.append(pfn)
        if len(out) >= 5:
            break
    return out


def validate_page_flags_layout(
    reader: PageReader,
    zones: list[ZoneSpan],
    sections: list[Section],
    pgmaps: list[DevPagemap],
) -> tuple[dict[str, int], list[str]]:
    """Check ZONES_PGSHIFT/NODES_PGSHIFT on sampled online pages; search if wrong.

    :return: (KernelInfo overrides, warnings). If no shift explains every
        sample, the overrides set ``zones_mask=0`` so that zone checks are
        disabled and the fingerprint relies on the pgmap pointer alone.
    """
    ki = reader.ki
    by_nr = {s.section_nr: s for s in sections}
    dev = sorted((r.start_pfn, r.end_pfn) for p in pgmaps for r in p.ranges)
    samples: list[tuple[int, int, int]] = []  # (flags, zone_idx, nid)
    for z in zones:
        if z.present_pages <= 0 or z.zone_idx == ki.zone_device:
            continue
        for pfn in _sample_pfns(ki, z, by_nr, dev):
            try:
                flags = reader.flags_of(reader.raw(pfn), 0)
            except drgn.FaultError:
                continue
            samples.append((flags, z.zone_idx, z.nid))
    if not samples:
        return {}, ["no online struct page could be sampled; zone/node shifts are unverified"]

    zw = ki.zones_mask.bit_length()
    nw = ki.nodes_mask.bit_length()

    def fits(zshift: int, nshift: int) -> bool:
        return all(
            (f >> zshift) & ki.zones_mask == zi and (nw == 0 or (f >> nshift) & ki.nodes_mask == n)
            for f, zi, n in samples
        )

    if fits(ki.zones_pgshift, ki.nodes_pgshift):
        return {}, []
    for zshift in range(64 - zw, -1, -1):
        if fits(zshift, zshift + zw):
            return (
                {"zones_pgshift": zshift, "nodes_pgshift": zshift + zw},
                [
                    f"computed ZONES_PGSHIFT {ki.zones_pgshift} did not match "
                    f"{len(samples)} sampled pages; using {zshift} (NODES_PGSHIFT {zshift + zw})"
                ],
            )
    return (
        {"zones_mask": 0, "nodes_mask": 0},
        [
            "no ZONES_PGSHIFT explains the sampled pages; zone/node checks disabled "
            "(the fingerprint relies on the pgmap pointer alone)"
        ],
    )


def check_zones_against_sections(
    ki: KernelInfo, zones: list[ZoneSpan], sections: list[Section]
) -> list[str]:
    """Warn when a zone has present pages but no present section lies in its span.

    Boot RAM is always in present sections (memblocks_present()); a zone without
    any means the ``mem_section`` data this snapshot read is damaged (zeroed roots).
    """
    present = sorted(s.section_nr for s in sections if s.present)
    warnings = []
    for z in zones:
        if z.present_pages <= 0 or z.zone_idx == ki.zone_device:
            continue
        lo = z.start_pfn >> ki.pfn_section_shift
        hi = (z.end_pfn - 1) >> ki.pfn_section_shift
        i = bisect.bisect_left(present, lo)
        if i == len(present) or present[i] > hi:
            warnings.append(
                f"zone {z.zone} of node {z.nid} has {z.present_pages} present pages but no "
                f"present section in sections {lo}-{hi}: mem_section data look damaged"
            )
    return warnings
