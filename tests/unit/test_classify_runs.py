"""classify() decides runs of alike sections once: same result as one decision per section.

Random snapshots whose sections repeat a few templates in runs (as a TiB of ZONE_DEVICE
sections do), with memory blocks over several sections, are classified by
:func:`subsecinspect.classify.decide.classify` and by the per-section reference
(tests/unit/persection.py); the ranges, evidence and confidences must be identical, and
the brute-force oracle must agree PFN by PFN.
"""

from __future__ import annotations

import dataclasses
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import reference_class
from persection import classify_per_section
from strategies import NSEC, SMALL_KERNEL, _section, snapshots

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.classify.runs import section_runs
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import (
    Altmap,
    DevPagemap,
    MemoryBlock,
    PgmapRange,
    Section,
    Snapshot,
    TargetInfo,
)

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def alike_snapshots(draw: st.DrawFn) -> Snapshot:
    """A random snapshot whose sections are runs of 1-3 templates, maybe with holes."""
    base = draw(snapshots())
    palette = [draw(_section(0)) for _ in range(draw(st.integers(1, 3)))]
    sections, nr = [], draw(st.integers(0, 2))
    while nr < NSEC:
        tpl = palette[draw(st.integers(0, len(palette) - 1))]
        length = draw(st.integers(1, 6))
        for n in range(nr, min(NSEC, nr + length)):
            sections.append(dataclasses.replace(tpl, section_nr=n))
        nr += length + draw(st.sampled_from([0, 0, 0, 1]))  # sometimes a missing section
    blocks, i = [], 0
    while i < len(sections):
        size = draw(st.integers(1, 3))
        group = [s.section_nr for s in sections[i:i + size]]
        i += size
        if group == list(range(group[0], group[0] + len(group))) and draw(st.booleans()):
            blocks.append(MemoryBlock(block_id=group[0], start_section_nr=group[0],
                                      nr_sections=len(group), state=draw(st.sampled_from(
                                          ["online", "offline", "going-online"]))))
    return dataclasses.replace(base, sections=tuple(sections), memory_blocks=tuple(blocks))


@SETTINGS
@given(st.one_of(alike_snapshots(), snapshots()))
def test_runs_equal_per_section_reference(snap: Snapshot) -> None:
    got, want = classify(snap), classify_per_section(snap)
    assert got.end_pfn == want.end_pfn
    assert [(r.start_pfn, r.end_pfn, r.cls, r.evidence_items, r.confidence)
            for r in got.ranges] == \
        [(r.start_pfn, r.end_pfn, r.cls, r.evidence_items, r.confidence) for r in want.ranges]


@settings(SETTINGS, max_examples=100)
@given(alike_snapshots())
def test_runs_agree_with_the_oracle(snap: Snapshot) -> None:
    for r in classify(snap).ranges:
        for pfn in range(r.start_pfn, r.end_pfn):
            assert (r.cls, r.confidence) == reference_class(snap, pfn)[:2], f"pfn {pfn:#x}"


@settings(SETTINGS, max_examples=100)
@given(alike_snapshots())
def test_runs_cover_the_sections_in_order(snap: Snapshot) -> None:
    ix = SnapshotIndex(snap)
    runs = list(section_runs(ix))
    covered = [nr for first, last, _ in runs for nr in range(first, last + 1)]
    assert covered == [nr for nr in ix.section_nrs if nr * ix.pages_per_section < ix.end_pfn]
    for (_, last, key), (first, _, key2) in pairwise(runs):
        # Neighbouring runs are split for a reason: a gap, a partial map or a different state.
        assert first != last + 1 or key is None or key2 is None or key != key2


def test_c3_note_is_per_section_inside_a_run() -> None:
    """Two alike unpopulated sections; a pgmap covers the first half of the first one. The
    rest of that section hosts ZONE_DEVICE (C3 with the note), the next one does not."""
    k = SMALL_KERNEL
    pps = k.pages_per_section
    flags = ("MARKED_PRESENT", "HAS_MEM_MAP")
    secs = tuple(Section(section_nr=n, section_mem_map=0, flags=flags, usage=0x1000,
                         subsection_map=0) for n in (0, 1))
    pg = DevPagemap(address=0xFFFF888000100000, type="MEMORY_DEVICE_FS_DAX", flags=0,
                    nr_range=0, ranges=(PgmapRange(0, 0, pps // 2, False),),
                    altmap=Altmap(0, 0, 0, 0, 0, 0, False))
    snap = Snapshot(kernel=k, target=TargetInfo("vmcore", "/synthetic", "elf"),
                    sections=secs, pgmaps=(pg,))
    got = [(r.start_pfn, r.end_pfn, r.cls, r.evidence.get("section_hosts_zone_device"))
           for r in classify(snap).ranges]
    assert got == [(0, pps // 2, PageClass.C4_DEV_INITIALISING, None),
                   (pps // 2, pps, PageClass.C3_SUBSECTION_GAP, True),
                   (pps, 2 * pps, PageClass.C3_SUBSECTION_GAP, None)]
    assert got == [(r.start_pfn, r.end_pfn, r.cls, r.evidence.get("section_hosts_zone_device"))
                   for r in classify_per_section(snap).ranges]
