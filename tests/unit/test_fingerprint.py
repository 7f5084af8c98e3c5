"""The §4.4 fingerprint on struct pages as the kernel leaves them (and as it does not)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import K61, c5b_sample, dev_sample, pgmap
from hypothesis import given
from hypothesis import strategies as st

from subsecinspect.snapshot.model import MemmapStatus, PageSample, ZoneSpan
from subsecinspect.snapshot.pageinit import (
    altmap_free_fingerprint,
    compound_head_address,
    find_frontier,
    page_address,
    page_pfn,
    zone_device_memmap_initialised,
)

PG = 0xFF38472B4252C3C0
DEVDAX = pgmap(PG, [(0x10C000, 0x112000)], type="MEMORY_DEVICE_GENERIC", shift=9)
ZONES = (ZoneSpan(0, "Device", 4, 0x100000, 0x12D000, 0),)
DEV_FLAGS = (4 << K61.zones_pgshift) | (1 << K61.pg_reserved)


def test_page_address_round_trip() -> None:
    assert page_address(K61, 0x10C000) == K61.vmemmap + 0x10C000 * 64
    assert page_pfn(K61, page_address(K61, 0x10C123)) == 0x10C123
    assert page_pfn(K61, page_address(K61, 5) + 8) is None  # inside a struct page
    assert page_pfn(K61, K61.vmemmap - 64) is None


def test_initialised_head_passes_with_soft_signals() -> None:
    fp = zone_device_memmap_initialised(dev_sample(K61, 0x10C000, PG), DEVDAX, K61, ZONES)
    assert fp and fp.reason == "ok" and fp.zone == 4 and not fp.tail
    assert "PG_reserved" in fp.soft and "mapcount=-1" in fp.soft


@pytest.mark.parametrize(("sample", "reason"), [
    # init_on_alloc zeroed vmemmap: zone 0 (DMA), pgmap NULL.
    (dev_sample(K61, 0x10C000, 0), "zone"),
    # CONFIG_DEBUG_VM page_init_poison(): all 0xff.
    (PageSample(0x10C000, MemmapStatus.READ, flags=(1 << 64) - 1, pgmap_slot=(1 << 64) - 1),
     "poisoned"),
    # Boot memmap reused in an early section: reserved, zone NORMAL.
    (replace(dev_sample(K61, 0x10C000, PG), flags=(2 << K61.zones_pgshift)), "zone"),
    # Stale memmap from a previous boot with another pgmap address.
    (dev_sample(K61, 0x10C000, PG + 0x1000), "pgmap_slot"),
    # Node field beyond nr_node_ids.
    (dev_sample(K61, 0x10C000, PG, nid=3), "node"),
    # PFN outside node 0's ZONE_DEVICE span.
    (dev_sample(K61, 0x200000, PG), "zone_span"),
    (dev_sample(K61, 0x10C000, PG, status=MemmapStatus.NOT_CAPTURED), "unreadable"),
])
def test_uninitialised_shapes_fail(sample: PageSample, reason: str) -> None:
    fp = zone_device_memmap_initialised(sample, DEVDAX, K61, ZONES)
    assert not fp
    assert fp.reason == reason


def _tail(pfn: int, slot: int, head_flags: int | None, head_slot: int | None) -> PageSample:
    return PageSample(pfn, MemmapStatus.READ, flags=DEV_FLAGS, pgmap_slot=slot,
                      head_flags=head_flags, head_pgmap_slot=head_slot)


HEAD_FLAGS = DEV_FLAGS | (1 << K61.pg_head)


def test_tail_6x_encoding_head_or_1() -> None:
    head = page_address(K61, 0x10C000)
    s = _tail(0x10C001, head | 1, HEAD_FLAGS, PG)
    assert compound_head_address(K61, 0x10C001, head | 1) == head
    fp = zone_device_memmap_initialised(s, DEVDAX, K61, ZONES)
    assert fp and fp.tail


def test_tail_7x_encoding_mask() -> None:
    """7.2: compound_info = mask | 1; head = tail address & mask (2 MiB of 64-byte pages)."""
    mask = ~((512 * 64) - 1) & ((1 << 64) - 1)
    pfn = 0x10C000 + 77
    assert compound_head_address(K61, pfn, mask | 1) == page_address(K61, 0x10C000)
    fp = zone_device_memmap_initialised(_tail(pfn, mask | 1, HEAD_FLAGS, PG), DEVDAX, K61, ZONES)
    assert fp and fp.tail


@pytest.mark.parametrize(("head_flags", "head_slot"), [
    (DEV_FLAGS, PG),             # head without PG_head (prep_compound_head not yet run)
    (HEAD_FLAGS, 0),             # head's pgmap not yet set
    (None, None),                # reader did not read the head
])
def test_tail_with_bad_head_fails(head_flags: int | None, head_slot: int | None) -> None:
    head = page_address(K61, 0x10C000)
    fp = zone_device_memmap_initialised(_tail(0x10C001, head | 1, head_flags, head_slot),
                                        DEVDAX, K61, ZONES)
    assert not fp and fp.reason == "tail_head"


def test_tail_whose_head_is_outside_the_pgmap_fails() -> None:
    head = page_address(K61, 0x10BFFF)  # last page of the namespace below
    fp = zone_device_memmap_initialised(_tail(0x10C001, head | 1, HEAD_FLAGS, PG),
                                        DEVDAX, K61, ZONES)
    assert not fp


def test_altmap_free_fingerprint() -> None:
    assert altmap_free_fingerprint(c5b_sample(K61, 0x100002), K61)
    zeroed = PageSample(0x100002, MemmapStatus.READ)
    assert altmap_free_fingerprint(zeroed, K61).reason == "zone"
    # An initialised data page (slot = pgmap) is not an altmap memmap page.
    assert not altmap_free_fingerprint(dev_sample(K61, 0x100002, PG), K61)


@given(st.integers(0, 5000), st.integers(1, 5000), st.integers(0, 5000),
       st.sampled_from([1, 8, 512]))
def test_find_frontier_finds_the_first_failing_probe(first: int, n: int, cut: int,
                                                      step: int) -> None:
    end = first + n
    frontier = first + cut
    calls = []

    def passes(pfn: int) -> bool:
        assert first <= pfn < end and (pfn - first) % step == 0
        calls.append(pfn)
        return pfn < frontier

    got = find_frontier(first, end, passes, step)
    probes = [p for p in range(first, end, step)]
    want = next((p for p in probes if p >= frontier), end)
    assert got == want
    assert len(calls) <= len(probes).bit_length() + 1
