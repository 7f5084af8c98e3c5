"""Fuzzing the classifier (issue #6.5b) on valid-typed but inconsistent snapshots.

:func:`strategies.snapshots` draws plausible kernels; here each one is then damaged the way a
crashed machine's structures can be: pgmap ranges past the last section, empty or reversed,
overlapping or duplicated pgmaps, an altmap bigger than its range or outside it, ``nr_range``
past the ranges, range indices out of order, a frontier outside its range, readability spans
unsorted or overlapping, evidence for pgmaps that do not exist, duplicated sections, subsection
bits past the section, memory blocks that overlap or are empty.

Contract (the docstring of subsecinspect/classify/decide.py): sorted, maximal ranges covering
``[0, end)`` exactly once,
``end`` the end of the highest present section, every range a valid class; ``classify_pfn``
agrees with the ranges; the brute-force oracle agrees on every PFN. No input makes it raise.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import oracle_end_pfn, reference_class
from strategies import PPS, SMALL_KERNEL, SPAN, snapshots

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify, classify_pfn
from subsecinspect.snapshot.checks import check_snapshot
from subsecinspect.snapshot.model import (
    Altmap,
    DevPagemap,
    MemmapStatus,
    MemoryBlock,
    PgmapRange,
    RangeMemmap,
    Section,
    Snapshot,
    TargetInfo,
)

FUZZ = settings(deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: PFNs around and past the synthetic span, up to the end of its 40-bit physical space
#: (MAX_PHYSMEM_BITS 40, PAGE_SHIFT 18): what :func:`check_snapshot` lets a decoder return.
MAX_PFN = 1 << (SMALL_KERNEL.max_physmem_bits - SMALL_KERNEL.page_shift)
PFN = st.one_of(st.integers(0, SPAN + 2 * PPS), st.sampled_from([0, SPAN, MAX_PFN // 2, MAX_PFN]))


def _pick(draw: st.DrawFn, items: tuple[Any, ...]) -> int | None:
    return draw(st.integers(0, len(items) - 1)) if items else None


def _replace_at(items: tuple[Any, ...], i: int, new: Any) -> tuple[Any, ...]:
    return (*items[:i], new, *items[i + 1:])


@st.composite
def _damage_pgmap(draw: st.DrawFn, pg: DevPagemap, reversed_ranges: bool) -> DevPagemap:
    kind = draw(st.sampled_from(["range", "altmap", "nr_range", "index", "xa", "dup_range"]))
    if kind == "range" and pg.ranges:
        i = _pick(draw, pg.ranges)
        assert i is not None
        r = pg.ranges[i]
        a = draw(PFN)
        near = st.integers(max(a - 8, 0), min(a + 8, MAX_PFN))
        b = draw(st.one_of(st.just(a), PFN, near))  # empty, reversed, past the end
        if not reversed_ranges:
            a, b = min(a, b), max(a, b)
        return dataclasses.replace(pg, ranges=_replace_at(pg.ranges, i, PgmapRange(
            r.index, a, b, r.complete)))
    if kind == "altmap":
        r0 = pg.ranges[0] if pg.ranges else PgmapRange(0, 0, 0, True)
        base = draw(st.one_of(st.just(r0.start_pfn), PFN))
        alt = Altmap(base, draw(PFN), draw(st.integers(0, 3 * PPS)),
                     draw(st.integers(0, 3 * PPS) | st.just(1 << 40)), 0, 0, valid=True)
        return dataclasses.replace(pg, altmap=alt, flags=1)
    if kind == "nr_range":
        return dataclasses.replace(pg, nr_range=draw(st.integers(-1, len(pg.ranges) + 3)))
    if kind == "index" and pg.ranges:
        idx = draw(st.permutations([r.index for r in pg.ranges]))
        bump = draw(st.integers(0, 4))
        return dataclasses.replace(pg, ranges=tuple(
            dataclasses.replace(r, index=j + bump) for r, j in zip(pg.ranges, idx, strict=True)))
    if kind == "xa":
        pairs = st.tuples(PFN, PFN).map(lambda t: (min(t), max(t)))
        spans = tuple(draw(st.lists(pairs, max_size=3)))  # overlapping, past the end
        return dataclasses.replace(pg, xa_spans=spans)
    if kind == "dup_range" and pg.ranges:
        return dataclasses.replace(pg, ranges=(*pg.ranges, pg.ranges[0]))
    return dataclasses.replace(pg, ref_dying=not pg.ref_dying)


@st.composite
def _damage_memmap(draw: st.DrawFn, mm: RangeMemmap) -> RangeMemmap:
    kind = draw(st.sampled_from(["frontier", "readability", "bounds", "orphan", "fingerprint"]))
    if kind == "frontier":
        return dataclasses.replace(mm, frontier_pfn=draw(PFN))
    if kind == "readability":
        spans = draw(st.lists(st.tuples(PFN, PFN, st.sampled_from(list(MemmapStatus))),
                              max_size=4))
        return dataclasses.replace(mm, readability=tuple(spans))  # unsorted, overlapping
    if kind == "bounds":
        return dataclasses.replace(mm, first_pfn=draw(PFN), end_pfn=draw(PFN))
    if kind == "orphan":  # evidence for a pgmap or range that does not exist
        return dataclasses.replace(mm, pgmap=draw(st.sampled_from([0, 1, mm.pgmap + 8])),
                                   range_index=draw(st.integers(0, 5)))
    return dataclasses.replace(mm, altmap_free_fingerprint=draw(
        st.sampled_from(["", "lru_self", "other", "garbage"])))


@st.composite
def inconsistent_snapshots(draw: st.DrawFn, same_address_twins: bool = True,
                           reversed_ranges: bool = True) -> Snapshot:
    """A random snapshot with 1-4 kinds of damage.

    *same_address_twins*: the same dev_pagemap may be listed twice. The classifier counts a
    pgmap once per address (snapshot/index.py), the oracle once per entry; which is right for a list
    no reader produces is not specified, so the oracle comparison leaves it out.
    *reversed_ranges*: a pgmap range may end before it starts; the oracle comparison leaves
    that out too (requests-fuzz.md R5, :func:`test_reversed_range_agrees_with_the_oracle`).
    """
    snap = draw(snapshots())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(
            ["pgmap", "pgmap", "memmap", "dup_pgmap", "section", "dup_section", "block"]))
        if kind == "pgmap" and (i := _pick(draw, snap.pgmaps)) is not None:
            pg = draw(_damage_pgmap(snap.pgmaps[i], reversed_ranges))
            snap = dataclasses.replace(snap, pgmaps=_replace_at(snap.pgmaps, i, pg))
        elif kind == "memmap" and (i := _pick(draw, snap.memmaps)) is not None:
            mm = draw(_damage_memmap(snap.memmaps[i]))
            snap = dataclasses.replace(snap, memmaps=_replace_at(snap.memmaps, i, mm))
        elif kind == "dup_pgmap" and (i := _pick(draw, snap.pgmaps)) is not None:
            pg = snap.pgmaps[i]  # the same dev_pagemap twice, or its twin at another address
            same = same_address_twins and draw(st.booleans())
            twin = pg if same else dataclasses.replace(pg, address=pg.address + 64)
            snap = dataclasses.replace(snap, pgmaps=(*snap.pgmaps, twin))
        elif kind == "section" and (i := _pick(draw, snap.sections)) is not None:
            sec = snap.sections[i]
            sec = dataclasses.replace(sec, subsection_map=draw(
                st.one_of(st.none(), st.integers(0, (1 << 64) - 1))))
            snap = dataclasses.replace(snap, sections=_replace_at(snap.sections, i, sec))
        elif kind == "dup_section" and (i := _pick(draw, snap.sections)) is not None:
            sec = snap.sections[i]
            twin = dataclasses.replace(sec, flags=draw(st.sampled_from(
                [(), ("MARKED_PRESENT",), ("MARKED_PRESENT", "HAS_MEM_MAP", "IS_ONLINE")])))
            sections = [*snap.sections, twin]
            snap = dataclasses.replace(snap, sections=tuple(draw(st.permutations(sections))))
        elif kind == "block":
            block = MemoryBlock(block_id=draw(st.integers(0, 20)),
                                start_section_nr=draw(st.integers(0, 20)),
                                nr_sections=draw(st.integers(0, 4)),
                                state=draw(st.sampled_from(["online", "offline", "unknown(7)"])))
            snap = dataclasses.replace(snap, memory_blocks=(*snap.memory_blocks, block))
    return snap


def _check_ranges(snap: Snapshot) -> Counter[str]:
    check_snapshot(snap)  # the input is one the saved-snapshot decoder would return
    result = classify(snap)
    assert result.end_pfn == oracle_end_pfn(snap)
    pos = 0
    for i, r in enumerate(result.ranges):
        assert isinstance(r.cls, PageClass)
        assert r.start_pfn == pos, f"gap or overlap at {pos:#x}"
        assert r.end_pfn > r.start_pfn, "empty range"
        if i:
            assert not result.ranges[i - 1].same_kind(r), f"not merged at {r.start_pfn:#x}"
        pos = r.end_pfn
    assert pos == result.end_pfn
    for r in result.ranges:
        for pfn in {r.start_pfn, (r.start_pfn + r.end_pfn) // 2, r.end_pfn - 1}:
            one = classify_pfn(snap, pfn)
            assert (one.cls, one.evidence_items, one.confidence) == \
                (r.cls, r.evidence_items, r.confidence), f"classify_pfn({pfn:#x})"
    return Counter(snapshots=1)


def _fuzz(strategy: st.SearchStrategy[Snapshot], examples: int,
          check: Callable[[Snapshot], Counter[str]]) -> Counter[str]:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def run(snap: Snapshot) -> None:
        seen.update(check(snap))

    run()
    return seen


def _check_oracle(snap: Snapshot) -> Counter[str]:
    result = classify(snap)
    for r in result.ranges:
        for pfn in range(r.start_pfn, r.end_pfn):
            cls, conf, _ = reference_class(snap, pfn)
            assert (r.cls, r.confidence) == (cls, conf), \
                f"pfn {pfn:#x}: classify {(r.cls, r.confidence)}, reference {(cls, conf)}"
    return Counter(r.cls.value for r in result.ranges)


def test_inconsistent_snapshots_cover_every_pfn_once(bad_input_record: Any) -> None:
    seen = _fuzz(inconsistent_snapshots(), 150, _check_ranges)
    bad_input_record("inconsistent snapshots", "classify() on 150 random snapshots with 1-4 "
                     "kinds of damage (ranges past the end/empty/reversed, overlapping and "
                     "duplicated pgmaps, oversized altmap, frontier outside its range, ...)",
                     f"{seen['snapshots']} classified: sorted maximal ranges covering [0, end) "
                     "once, classify_pfn agrees; no exception", None, group="fuzz")
    assert seen["snapshots"] >= 150


def test_inconsistent_snapshots_match_the_oracle(bad_input_record: Any) -> None:
    strategy = inconsistent_snapshots(same_address_twins=False, reversed_ranges=False)
    seen = _fuzz(strategy, 100, _check_oracle)
    top = ", ".join(f"{c} {n}" for c, n in seen.most_common(4))
    bad_input_record("inconsistent snapshots vs the oracle", "classify() vs the brute-force "
                     "reference on every PFN of 100 damaged random snapshots",
                     f"agree on every PFN; ranges by class: {top}, ...", None, group="fuzz")
    assert seen[PageClass.CORRUPT.value], "no damage was labelled CORRUPT"


def test_reversed_range_agrees_with_the_oracle() -> None:
    """A reversed pgmap range (start > end, no xarray spans) registers nothing, as in the
    oracle (found by the fuzzing: classify() used to call [end, start) CORRUPT)."""
    k = SMALL_KERNEL
    sec = Section(section_nr=1, section_mem_map=0, flags=("MARKED_PRESENT", "HAS_MEM_MAP",
                  "IS_ONLINE"), usage=0x1000, subsection_map=0xFF)
    pg = DevPagemap(address=0xFFFF888000100000, type="MEMORY_DEVICE_FS_DAX", flags=0,
                    nr_range=1, ranges=(PgmapRange(0, PPS + 10, PPS, True),),
                    altmap=Altmap(0, 0, 0, 0, 0, 0, False))
    snap = Snapshot(kernel=k, target=TargetInfo("vmcore", "/synthetic", "elf"),
                    sections=(sec,), pgmaps=(pg,))
    check_snapshot(snap)
    _check_oracle(snap)
