"""The bulk page-type decoder of kernel/hotplug_ram.py on hand-made memmap bytes.

Both encodings of ``PageOffline()`` the lab kernels use (include/linux/page-flags.h):
v6.12+ ``page_type >> 24 == PGTY_offline`` (0xf1), and before v6.10 the PG_offline bit
(0x100) *cleared* under PAGE_TYPE_BASE (0xf0000000). Mapcounts (0xffffffff = -1, small
positive numbers) and other types (buddy) must not read as offline.
"""

from __future__ import annotations

import struct

from subsecinspect.kernel.hotplug_ram import _offline_runs

SIZE, OFF = 64, 48  # sizeof(struct page), offsetof(page_type) on Debian x86_64 6.1


def _memmap(words: list[int]) -> bytes:
    out = bytearray(SIZE * len(words))
    for i, w in enumerate(words):
        struct.pack_into("<I", out, i * SIZE + OFF, w)
    return bytes(out)


def test_pgty_encoding() -> None:
    offline, buddy, unmapped, mapped = 0xF1000000, 0xF0000003, 0xFFFFFFFF, 0x00000002
    data = _memmap([unmapped, offline, offline, buddy, mapped, offline, 0xF1FFFFFF])
    assert _offline_runs(data, OFF, SIZE, ("pgty", 0xF1)) == [(1, 3), (5, 7)]


def test_page_type_base_encoding() -> None:
    base = 0xF0000000
    offline = 0xFFFFFFFF & ~0x100  # PageType(page, PG_offline): bit cleared under the base
    buddy = 0xFFFFFFFF & ~0x80
    data = _memmap([0xFFFFFFFF, offline, buddy, offline, offline, 0x00000000, base | 0x100])
    assert _offline_runs(data, OFF, SIZE, ("base", 0x100)) == [(1, 2), (3, 5)]
