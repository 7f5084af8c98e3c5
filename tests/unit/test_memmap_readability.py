"""Sampled readability probes (kernel/memmap.py) against probing every section piece.

A fake page reader faults according to a status map made of runs (the shape
``vmemmap_populate()`` and the dump/kcore capture leave, see ``_readability``); the
sampled :func:`subsecinspect.kernel.memmap._readability` must return exactly the spans of
the old two-probes-per-piece algorithm (kept below as the reference), while probing far
fewer struct pages on long ranges.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import drgn
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import SMALL_KERNEL

from subsecinspect.kernel import memmap
from subsecinspect.snapshot.model import KernelInfo, MemmapStatus

PPS, PPSUB = SMALL_KERNEL.pages_per_section, SMALL_KERNEL.pages_per_subsection
STRIDE = memmap.SAMPLE_STRIDE
STATES = [MemmapStatus.READ, MemmapStatus.UNREADABLE, MemmapStatus.NOT_CAPTURED]


@dataclass
class FakeReader:
    """``PageReader.raw()``: faults where the status map says the struct page is not READ."""

    bounds: list[int]  # sorted run starts
    states: list[MemmapStatus]
    ki: KernelInfo = SMALL_KERNEL
    probes: list[int] = field(default_factory=list)

    def status(self, pfn: int) -> MemmapStatus:
        return self.states[bisect.bisect_right(self.bounds, pfn) - 1]

    def raw(self, pfn: int) -> bytes:
        self.probes.append(pfn)
        st = self.status(pfn)
        if st is not MemmapStatus.READ:
            raise drgn.FaultError(st.value, 0xFFFFEA0000000000 + 64 * pfn)
        return b"\0" * 64


class FakeReadability:
    def status_of_fault(self, pfn: int, error: str) -> MemmapStatus:
        return MemmapStatus(error.split(":")[0])


def every_piece(reader: FakeReader, start: int, end: int) -> list[memmap.Span]:
    """The session-1 algorithm: two probes per piece, every subsection where they differ."""
    spans: list[memmap.Span] = []
    piece = start
    while piece < end:
        piece_end = min(end, (piece // PPS + 1) * PPS)
        last_sub = max(piece, (piece_end - 1) // PPSUB * PPSUB)
        st_a, st_b = reader.status(piece), reader.status(last_sub)
        if st_a == st_b:
            memmap._append(spans, piece, piece_end, st_a)
        else:
            sub = piece
            while sub < piece_end:
                sub_end = min(piece_end, (sub // PPSUB + 1) * PPSUB)
                memmap._append(spans, sub, sub_end, reader.status(sub))
                sub = sub_end
        piece = piece_end
    return spans


@st.composite
def layouts(draw: st.DrawFn) -> tuple[FakeReader, int, int]:
    """A range of up to ~5 strides of sections whose statuses change at a few PFNs: anywhere
    in the partial head and tail sections, and inside the full sections only where the new
    status then holds for at least one stride (a run, never an island)."""
    nsec = draw(st.integers(1, 5 * STRIDE))
    start = draw(st.integers(0, PPS - 1)) + 3 * PPS
    end = 3 * PPS + (nsec - 1) * PPS + draw(st.integers(1, PPS))
    end = max(end, start + 1)
    bounds = [0]
    head_end, tail_start = (start // PPS + 1) * PPS, (end - 1) // PPS * PPS
    for _ in range(draw(st.integers(0, 2))):  # inside the head section
        bounds.append(draw(st.integers(start, head_end)))
    pos = head_end
    while pos + STRIDE * PPS < tail_start and draw(st.booleans()):
        pos = draw(st.integers(pos + STRIDE * PPS, min(pos + 3 * STRIDE * PPS, tail_start)))
        bounds.append(pos - draw(st.integers(0, PPS)))  # maybe inside a section
    for _ in range(draw(st.integers(0, 2))):  # inside the tail section
        bounds.append(draw(st.integers(tail_start, end)))
    bounds = sorted(set(bounds))
    states = [draw(st.sampled_from(STATES)) for _ in bounds]
    return FakeReader(bounds, states), start, end


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_sampled_spans_equal_every_piece(layout: tuple[FakeReader, int, int]) -> None:
    reader, start, end = layout
    got, _ = memmap._readability(reader, FakeReadability(), start, end)  # type: ignore[arg-type]
    assert got == every_piece(reader, start, end)
    assert got[0][0] == start and got[-1][1] == end


def test_long_uniform_range_probes_a_sample() -> None:
    nsec = 20 * STRIDE
    reader = FakeReader([0, 3 * PPS + 2 * PPS + 5], [MemmapStatus.READ, MemmapStatus.NOT_CAPTURED])
    start, end = 3 * PPS + 17, 3 * PPS + nsec * PPS
    got, _ = memmap._readability(reader, FakeReadability(), start, end)  # type: ignore[arg-type]
    assert got == every_piece(reader, start, end)
    assert [st for _, _, st in got] == [MemmapStatus.READ, MemmapStatus.NOT_CAPTURED]
    # Two probes per sample (every STRIDE-th piece and the last) plus the bisection
    # towards the change in section 5 (inside it: its subsections are probed too).
    assert len(reader.probes) < 2 * (nsec // STRIDE + 2) + 4 * STRIDE.bit_length() + PPS // PPSUB
    assert len(reader.probes) < nsec // 4
