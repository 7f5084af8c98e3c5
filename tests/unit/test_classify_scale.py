"""Scale: a 1 TiB snapshot (8192 sections) classifies to the right ranges.

Speed is measured by scripts/bench_classify.py (ratios in one run), never by a timed test.
"""

from __future__ import annotations

from builders import K61, ONLINE_EARLY, PRESENT, altmap, block, pgmap, section, snapshot

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify

S = 0x8000


def test_8192_sections() -> None:
    """1 TiB: 512 GiB of boot RAM, then 64 pmem namespaces of 8 GiB with altmaps,
    each starting 64 MiB into a section (so every boundary section is shared)."""
    secs = [section(i, ONLINE_EARLY) for i in range(4096)]
    pgs = []
    for j in range(64):
        start = (4096 + j * 64) * S + S // 2
        end = start + 64 * S if j < 63 else 8192 * S
        pgs.append(pgmap(0xFFFF888100000000 + j * 0x200, [(start, end)],
                         alt=altmap(start, end - 1, 2, 4094)))
    secs += [section(i, (*PRESENT, "TAINT_ZONE_DEVICE") if i % 64 == 0 else PRESENT)
             for i in range(4096, 8192)]
    secs[4096] = section(4096, PRESENT, smap=((1 << 64) - 1) & ~((1 << 32) - 1))
    snap = snapshot(K61, secs, pgs, blocks=[block(i, "online") for i in range(4096)])
    result = classify(snap)
    assert result.end_pfn == 8192 * S
    summary = {s.cls: s.pages for s in result.summary()}
    assert summary[PageClass.ONLINE_RAM] == 4096 * S
    assert summary[PageClass.C5_DEV_DRIVER_RESERVED] == 64 * 2
    assert summary[PageClass.C3_SUBSECTION_GAP] == S // 2
    assert len(result.ranges) == 1 + 1 + 64 * 3
