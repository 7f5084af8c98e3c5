"""The frontier search of kernel/memmap.py on synthetic "initialised prefix" memmaps.

memmap_init_zone_device() initialises PFNs upwards, a compound page's head before its tails
(memmap_init_compound), so an initialised prefix ending at any PFN must be found exactly,
with O(log n) probes, skipping spans whose memmap is unreadable.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subsecinspect.kernel.memmap import _frontier
from subsecinspect.snapshot.model import MemmapStatus

R, U = MemmapStatus.READ, MemmapStatus.UNREADABLE


def _run(first: int, end: int, step: int, frontier: int, spans: list) -> tuple[int | None, int]:
    calls: list[int] = []

    def passes(pfn: int) -> bool:
        calls.append(pfn)
        assert first <= pfn < end
        assert any(a <= pfn < b and s is R for a, b, s in spans), f"probed unreadable {pfn}"
        return pfn < frontier

    return _frontier(passes, first, end, step, spans), len(calls)


@settings(max_examples=300, deadline=None)
@given(
    n_compound=st.integers(1, 600),
    shift=st.sampled_from([0, 1, 4, 9]),
    data=st.data(),
)
def test_exact_frontier_all_readable(n_compound: int, shift: int, data: st.DataObject) -> None:
    step = 1 << shift
    first = 0x11c600
    end = first + n_compound * step
    frontier = data.draw(st.integers(first, end))
    got, calls = _run(first, end, step, frontier, [(first - 0x600, end, R)])
    assert got == frontier
    assert calls <= 2 * (n_compound.bit_length() + shift + 4)


def test_unreadable_prefix_is_skipped() -> None:
    # Live --map=dev: the memmap of the fully covered section is on the device.
    first, mid, end = 0x100400, 0x108000, 0x10c000
    spans = [(0x100000, mid, U), (mid, end, R)]
    assert _run(first, end, 1, end, spans)[0] == end
    assert _run(first, end, 1, 0x10a123, spans)[0] == 0x10a123
    # The frontier lies in the unreadable part: the first readable page already fails.
    assert _run(first, end, 1, 0x101000, spans)[0] == mid


def test_nothing_readable() -> None:
    assert _run(0x100400, 0x10c000, 1, 0x10c000, [(0x100000, 0x10c000, U)])[0] is None


@pytest.mark.parametrize("frontier", [0x11c600, 0x11c601, 0x11c7ff, 0x11c800, 0x11c9ff, 0x12d000])
def test_compound_boundaries(frontier: int) -> None:
    first, end = 0x11c600, 0x12d000
    assert _run(first, end, 512, frontier, [(0x11c000, end, R)])[0] == frontier
