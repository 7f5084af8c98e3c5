"""Window bookkeeping: seeding from a classification and the lifecycle state machine."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from subsecinspect.probes.events import Event, EventKind, Phase, WindowClass
from subsecinspect.probes.windows import Window, WindowModel, bounds_of, map_contents, seed

SHIFT = 15  # x86_64: 128 MiB sections of 4 KiB pages
PG = 0xFF11000012340000


@dataclass
class R:  # a ClassRange stand-in (same attribute names)
    start_pfn: int
    end_pfn: int
    cls: str
    evidence: dict[str, str | int | bool] = field(default_factory=dict)


def ev(kind: EventKind, start: int = 0, nr: int = 0, pgmap: int = 0, arg: int = 0,
       **kw: int) -> Event:
    return Event(ts_ns=0, kind=kind, comm="t", tid=1, tgid=1, pgmap=pgmap, start_pfn=start,
                 nr_pages=nr, arg=arg, **kw)  # type: ignore[arg-type]


def test_seed_from_classification() -> None:
    # nvdimm-mixed after boot: A (fsdax map=dev) has a C5 reserve of 2 pages; a second pgmap is
    # mid-initialisation; two hot-added offline blocks (sections 33-34) are C1.
    ranges = [
        R(0, 0x40000, "ONLINE_RAM"),
        R(0x100000, 0x100002, "C5_DEV_DRIVER_RESERVED", {"pgmap": f"{PG:#x}"}),
        R(0x100002, 0x100400, "C5b_DEV_ALTMAP_MEMMAP", {"pgmap": f"{PG:#x}"}),
        R(0x100400, 0x10C000, "C2_DEV_VALID", {"pgmap": f"{PG:#x}"}),
        R(0x10C000, 0x10D000, "C4_DEV_INITIALISING", {"pgmap": "0x2000"}),
        R(0x10D000, 0x112000, "C4_DEV_INITIALISING", {"pgmap": "0x2000"}),
        R(0x108000 + 0x10000, 0x118000 + 0x10000, "C1_OFFLINE_RAM"),
    ]
    wins, c1 = seed(ranges, SHIFT)
    assert wins == [
        Window(0x100000, 0x100002, WindowClass.C5, Phase.SEEDED, PG),
        Window(0x10C000, 0x112000, WindowClass.C4, Phase.SEEDED, 0x2000),  # merged
    ]
    assert c1 == {0x118000 >> SHIFT, (0x128000 - 1) >> SHIFT}
    model = WindowModel.seeded(wins, c1, SHIFT)
    assert model.lookup(0x100001).cls is WindowClass.C5  # type: ignore[union-attr]
    assert model.lookup(0x100002) is None
    assert model.lookup(0x120000).cls is WindowClass.C1  # type: ignore[union-attr]


def test_namespace_create_lifecycle() -> None:
    # fsdax --map=dev 192M: memremap_pages -> memmap_init_zone_device (data pages only,
    # from base + reserve + free) -> returns; the reserve stays unsafe.
    m = WindowModel(SHIFT)
    ch = m.apply(ev(EventKind.MEMREMAP_ENTER, 0x100000, 0xC000, PG, 0, altmap_base=0x100000,
                    altmap_reserve=2, altmap_free=1022))
    assert [w.cls for w in ch.opened] == [WindowClass.C4, WindowClass.C5]
    assert m.lookup(0x100500).cls is WindowClass.C4  # type: ignore[union-attr]
    assert m.lookup(0x100000).cls is WindowClass.C5  # type: ignore[union-attr] # C5 beats C4
    m.apply(ev(EventKind.MIZD_ENTER, 0x100400, 0xBC00, PG))
    assert m.lookup(0x100500).phase is Phase.MEMMAP_INIT  # type: ignore[union-attr]
    ch = m.apply(ev(EventKind.MIZD_RETURN, 0x100400, 0xBC00, PG))
    assert [w.cls for w in ch.closed] == [WindowClass.C4]
    assert m.lookup(0x100500) is None
    assert m.lookup(0x100001).cls is WindowClass.C5  # type: ignore[union-attr]
    assert m.apply(ev(EventKind.MEMREMAP_RETURN, pgmap=PG, arg=0xFFFF8880)).closed == ()
    # teardown: C4b over the whole range until memunmap_pages returns, then nothing
    m.apply(ev(EventKind.MEMUNMAP_ENTER, 0x100000, 0xC000, PG))
    assert m.lookup(0x100500).cls is WindowClass.C4B  # type: ignore[union-attr]
    ch = m.apply(ev(EventKind.MEMUNMAP_RETURN, pgmap=PG))
    assert {w.cls for w in ch.closed} == {WindowClass.C4B, WindowClass.C5}
    assert m.windows == []


def test_memremap_failure_drops_the_pgmap() -> None:
    m = WindowModel(SHIFT)
    m.apply(ev(EventKind.MEMREMAP_ENTER, 0x100000, 0x1000, PG))
    m.apply(ev(EventKind.MEMREMAP_ENTER, 0x200000, 0x1000, 0x1234))
    m.apply(ev(EventKind.MEMREMAP_RETURN, pgmap=PG, arg=-12))
    assert [w.owner for w in m.windows] == [0x1234]


def test_only_the_initialised_range_closes() -> None:
    # two ranges of one pgmap: memmap_init_zone_device of range 0 leaves range 1 open
    m = WindowModel(SHIFT)
    m.apply(ev(EventKind.MEMREMAP_ENTER, 0x100000, 0x1000, PG, 0))
    m.apply(ev(EventKind.MEMREMAP_ENTER, 0x300000, 0x1000, PG, 1))
    m.apply(ev(EventKind.MIZD_RETURN, 0x100000, 0x1000, PG))
    assert m.lookup(0x100000) is None
    assert m.lookup(0x300800).cls is WindowClass.C4  # type: ignore[union-attr]


def test_kmem_hotplug_online_offline() -> None:
    # kmem: add_memory_driver_managed -> add_memory_resource (C1) -> online_pages ->
    # move_pfn_range_to_zone(ZONE_MOVABLE/NORMAL) ret (C1 closes) -> offline_pages (C1 again)
    m = WindowModel(SHIFT)
    ch = m.apply(ev(EventKind.ADD_MEMORY, 0x108000, 0x10000))
    assert ch.c1_set == (33, 34)
    assert m.lookup(0x110000).cls is WindowClass.C1  # type: ignore[union-attr]
    m.apply(ev(EventKind.ADD_MEMORY_RETURN, 0x108000, 0x10000, arg=0))
    assert m.lookup(0x110000) is not None
    # ZONE_DEVICE moves do not close C1 (pgmap_type carries ZONE_DEVICE's value)
    m.apply(ev(EventKind.MOVE_PFN_RANGE_RET, 0x108000, 0x8000, arg=4, pgmap_type=4))
    assert m.lookup(0x108000) is not None
    ch = m.apply(ev(EventKind.MOVE_PFN_RANGE_RET, 0x108000, 0x8000, arg=2, pgmap_type=4))
    assert ch.c1_cleared == (33,)
    assert m.lookup(0x108000) is None and m.lookup(0x110000) is not None
    m.apply(ev(EventKind.OFFLINE_PAGES_RET, 0x108000, 0x8000, arg=-16))  # -EBUSY: unchanged
    assert m.lookup(0x108000) is None
    m.apply(ev(EventKind.OFFLINE_PAGES_RET, 0x108000, 0x8000, arg=0))
    assert m.lookup(0x108000).phase is Phase.OFFLINED  # type: ignore[union-attr]
    m.apply(ev(EventKind.SPARSE_REMOVE, 0x108000, 0x8000))
    assert m.lookup(0x108000) is None


def test_failed_add_memory_clears_c1() -> None:
    m = WindowModel(SHIFT)
    m.apply(ev(EventKind.ADD_MEMORY, 0x108000, 0x8000))
    m.apply(ev(EventKind.ADD_MEMORY_RETURN, 0x108000, 0x8000, arg=-17))
    assert m.c1_sections == {}


def test_map_contents_and_bounds() -> None:
    w1 = Window(0x100000, 0x100002, WindowClass.C5, Phase.SEEDED, PG)
    w2 = Window(0x10C000, 0x112000, WindowClass.C4, Phase.SEEDED, 2)
    slots, b = map_contents([w1, w2], 4)
    assert slots == [w1, w2, None, None]
    assert (b.lo, b.hi, b.nwin) == (0x100000, 0x112000, 2)
    assert bounds_of([]).nwin == 0
    with pytest.raises(ValueError, match="slots"):
        map_contents([w1, w2], 1)
