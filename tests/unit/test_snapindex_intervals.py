"""SnapshotIndex keeps memory blocks and pgmap spans as intervals, not per-section tables.

A damaged ``pgmap_array`` span or memory block may reach the end of the physical address
space (requests-fuzz.md R2): the index must answer the same as a per-section table would,
without building one. The per-section answers are computed here the session-1 way.
"""

from __future__ import annotations

import dataclasses

from builders import PRESENT, kernel, pgmap, section, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import SMALL_KERNEL, snapshots

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import MemoryBlock, Snapshot

STATES = ["online", "offline", "going-online"]


def per_section_blocks(snap: Snapshot) -> dict[int, MemoryBlock]:
    table: dict[int, MemoryBlock] = {}
    for b in snap.memory_blocks:  # the later block wins an overlap
        for nr in range(b.start_section_nr, b.start_section_nr + b.nr_sections):
            table[nr] = b
    return table


def per_section_hosts(ix: SnapshotIndex) -> set[int]:
    out: set[int] = set()
    for h in ix.hits:
        shift = ix.section_shift
        out.update(range(h.start_pfn >> shift, ((h.end_pfn - 1) >> shift) + 1))
    return out


@st.composite
def with_blocks(draw: st.DrawFn) -> Snapshot:
    """A random snapshot whose memory blocks may overlap, repeat or be empty."""
    snap = draw(snapshots())
    blocks = tuple(
        MemoryBlock(block_id=i, start_section_nr=draw(st.integers(0, 20)),
                    nr_sections=draw(st.integers(0, 6)), state=draw(st.sampled_from(STATES)))
        for i in range(draw(st.integers(0, 8)))
    )
    return dataclasses.replace(snap, memory_blocks=blocks)


@settings(max_examples=300, deadline=None)
@given(with_blocks())
def test_intervals_answer_like_per_section_tables(snap: Snapshot) -> None:
    ix = SnapshotIndex(snap)
    table, hosts = per_section_blocks(snap), per_section_hosts(ix)
    for nr in range(-1, 30):
        assert ix.section_block(nr) is table.get(nr), nr
        assert ix.section_hosts_pgmap(nr) == (nr in hosts), nr
        assert ix.block(nr * SMALL_KERNEL.pages_per_section + 3) is table.get(nr)


def test_span_to_the_end_of_a_52_bit_space() -> None:
    """One present section, a pgmap whose xarray span and a memory block that reach the
    last PFN of 52 physical bits: 2^25 sections, classified from a handful of intervals."""
    k = kernel(max_physmem_bits=52)
    last = (1 << (52 - k.page_shift)) - 1
    pps = k.pages_per_section
    pg = dataclasses.replace(pgmap(0xFFFF888000100000, [(pps, 2 * pps)]),
                             xa_spans=((pps, last),))
    huge = MemoryBlock(block_id=0, start_section_nr=0, nr_sections=(last + 1) // pps,
                       state="offline")
    snap = dataclasses.replace(snapshot(k, [section(0, PRESENT), section(1, PRESENT)], [pg]),
                               memory_blocks=(huge,))
    ix = SnapshotIndex(snap)
    assert ix.section_block((last + 1) // pps - 1) is huge
    assert ix.section_block((last + 1) // pps) is None
    assert ix.section_hosts_pgmap(1 << 20) and not ix.section_hosts_pgmap(0)
    result = classify(snap)
    assert result.end_pfn == 2 * pps
    assert [r.cls for r in result.ranges] == [PageClass.C1_OFFLINE_RAM, PageClass.C2_DEV_VALID]
