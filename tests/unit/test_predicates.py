"""The kernel predicates of §5.1 and the ✓/✗ judgement of §5.2, per case."""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import K61, K510, ONLINE_EARLY, PRESENT, altmap, pgmap, section, snapshot
from test_classify_cases import MID_BASE, MID_FIRST, legacy_e820, mid_init, nvdimm_mixed

from subsecinspect.classify.decide import classify_pfn
from subsecinspect.classify.predicates import (
    get_dev_pagemap,
    kernel_answers,
    pfn_to_online_page,
    pfn_valid,
    pgmap_pfn_valid,
)
from subsecinspect.snapshot.model import Snapshot


def _row(snap: Snapshot, pfn: int) -> dict[str, tuple[str, bool | None]]:
    cls = classify_pfn(snap, pfn).cls
    return {a.name.split(" ")[0]: (a.answer, a.correct) for a in kernel_answers(snap, pfn, cls)}


def test_pfn_valid_early_section_is_valid_everywhere() -> None:
    """Early sections are valid for the whole section ("traditionally")."""
    snap = snapshot(K61, [section(0, ONLINE_EARLY, smap=1), section(1, PRESENT, smap=1)])
    assert pfn_valid(snap, 0x7FFF)          # early, bit clear -> still valid
    assert not pfn_valid(snap, 0x8000 + 0x7FFF)  # non-early, bit clear -> invalid (C3)
    assert pfn_valid(snap, 0x8000)
    assert not pfn_valid(snap, 0x20000)     # no section


def test_early_hole_row() -> None:
    """EARLY_HOLE: pfn_valid 1 (boot memmap) ✓; >=5.12 NULL ✓; the 5.3-5.11 macro
    returns a reserved non-RAM page as online ✗."""
    snap = snapshot(K61, [section(0, ONLINE_EARLY, smap=1)])
    row = _row(snap, 0x7FFF)
    assert row["pfn_valid"] == ("1", True)
    assert row["pfn_to_online_page"] == ("NULL", True)
    old = replace(snap, kernel=K510)
    assert _row(old, 0x7FFF)["pfn_to_online_page"] == ("page", False)


def test_c5_reserve_row() -> None:
    """C5: pfn_valid ✗, get_dev_pagemap ✗, pgmap_pfn_valid false ✓."""
    snap = nvdimm_mixed()
    row = _row(snap, 0x100000)
    assert row["pfn_valid"] == ("1", False)
    assert row["pfn_to_online_page"] == ("NULL", True)
    assert row["get_dev_pagemap"][1] is False
    assert row["pgmap_pfn_valid"] == ("false", True)


def test_c2_row_and_pgmap_pfn_valid() -> None:
    snap = nvdimm_mixed()
    pg = snap.pgmaps[0]
    assert pgmap_pfn_valid(snap, pg, 0x100400) and not pgmap_pfn_valid(snap, pg, 0x1003FF)
    row = _row(snap, 0x100400)
    assert row["pfn_valid"] == ("1", True)
    assert row["pfn_to_online_page"] == ("NULL", True)   # NULL by design
    assert row["pgmap_pfn_valid"] == ("true", True)


def test_c4_in_progress_range() -> None:
    """C4 (own sections): pfn_valid ✗, get_dev_pagemap ✗. pgmap_pfn_valid searches
    only i < nr_range (mm/memremap.c), so the range in progress answers false."""
    snap = mid_init(MID_FIRST)
    row = _row(snap, MID_FIRST + 10)
    assert row["pfn_valid"] == ("1", False)
    assert row["get_dev_pagemap"][1] is False
    assert row["pgmap_pfn_valid"] == ("false", True)


def test_c4_in_collision_section_fools_the_macro_and_untainted_new_kernels() -> None:
    """C4 inside an early online section: the 5.3-5.11 macro and a >=5.12 kernel
    before move_pfn_range_to_zone() tainted the section both hand out the page ✗."""
    snap = legacy_e820()
    pg = replace(snap.pgmaps[0], nr_range=0)
    secs = tuple(replace(s, flags=ONLINE_EARLY) if s.section_nr == 8 else s
                 for s in snap.sections)  # not tainted yet
    snap = replace(snap, pgmaps=(pg,), memmaps=(), sections=secs)
    pfn = 0x45400 + 5
    assert classify_pfn(snap, pfn).cls.value == "C4_DEV_INITIALISING"
    assert pfn_to_online_page(snap, pfn, out_of_line=True)
    assert pfn_to_online_page(snap, pfn, out_of_line=False)
    assert _row(snap, pfn)["pfn_to_online_page"] == ("page", False)


def test_tainted_collision_section_hides_device_pages() -> None:
    snap = legacy_e820()
    assert not pfn_to_online_page(snap, 0x45400, out_of_line=True)
    assert pfn_to_online_page(snap, 0x44FFF, out_of_line=True)  # RAM below, same section
    assert pfn_to_online_page(snap, 0x45400, out_of_line=False)  # the macro does not look


def test_teardown_ref_dying() -> None:
    """After percpu_ref_kill() get_dev_pagemap() is NULL (✓), so a tainted online
    collision section hands out the page again (✗)."""
    snap = legacy_e820()
    snap = replace(snap, pgmaps=(replace(snap.pgmaps[0], ref_dying=True),))
    assert get_dev_pagemap(snap, 0x45400) is None
    row = _row(snap, 0x45400)
    assert row["get_dev_pagemap"] == ("NULL", True)
    assert row["pfn_to_online_page"] == ("page", False)


@pytest.mark.parametrize("pfn", [0x100, 0x7FFF])
def test_online_ram_row_is_all_right(pfn: int) -> None:
    snap = snapshot(K61, [section(0, ONLINE_EARLY)])
    assert all(ok for _, ok in _row(snap, pfn).values())


def test_c1_offline_row() -> None:
    snap = snapshot(K61, [section(34, PRESENT)])
    row = _row(snap, 34 * 0x8000)
    assert row["pfn_valid"] == ("1", False)
    assert row["pfn_to_online_page"] == ("NULL", True)
    assert row["get_dev_pagemap"] == ("NULL", True)


def test_pgmap_pfn_valid_absent_before_512() -> None:
    snap = replace(nvdimm_mixed(), kernel=K510)
    assert _row(snap, 0x100400)["pgmap_pfn_valid"] == ("n/a", None)


def test_mid_base_is_c5() -> None:
    snap = snapshot(K61, [section(32)], [pgmap(1, [(MID_BASE, MID_BASE + 0x1000)],
                                                alt=altmap(MID_BASE, 0, 2, 10))])
    assert classify_pfn(snap, MID_BASE).cls.value == "C5_DEV_DRIVER_RESERVED"
