"""kernel._check_complete_ranges: O(1) per section, the same warnings as the bit loop.

The reference below is the session-1 loop (one ``want |= 1 << bit`` per subsection of
every section a complete range overlaps); on random snapshots both must warn alike.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from strategies import snapshots

from subsecinspect.kernel.read import _check_complete_ranges
from subsecinspect.snapshot.model import DevPagemap, KernelInfo, Section, Snapshot


def reference(ki: KernelInfo, sections: list[Section], pgmaps: list[DevPagemap]) -> list[str]:
    by_nr = {s.section_nr: s for s in sections}
    pps, ppsub = ki.pages_per_section, ki.pages_per_subsection
    out: list[str] = []
    for pg in pgmaps:
        if pg.ref_dying:
            continue
        for r in pg.ranges:
            if not r.complete:
                continue
            for nr in range(r.start_pfn // pps, (r.end_pfn - 1) // pps + 1):
                sec = by_nr.get(nr)
                base = nr * pps
                a, b = max(r.start_pfn, base), min(r.end_pfn, base + pps)
                want = 0
                for bit in range((a - base) // ppsub, (b - 1 - base) // ppsub + 1):
                    want |= 1 << bit
                if sec is None or not sec.valid:
                    out.append(f"section {nr} holds complete range {r.index} of pgmap "
                               f"{pg.address:#x} but is not valid (damaged mem_section?)")
                elif sec.subsection_map is not None and not sec.early:
                    if sec.subsection_map & want != want:
                        out.append(
                            f"section {nr}: subsection map {sec.subsection_map:#x} lacks "
                            f"bits {want & ~sec.subsection_map:#x} of complete range "
                            f"{r.index} of pgmap {pg.address:#x} (damaged mem_section_usage?)"
                        )
    return out


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(snapshots())
def test_same_warnings_as_the_bit_loop(snap: Snapshot) -> None:
    secs, pgs = list(snap.sections), list(snap.pgmaps)
    assert _check_complete_ranges(snap.kernel, secs, pgs) == reference(snap.kernel, secs, pgs)
