"""Lab tests: the ground-truth module (tests/kmod/subsec_gt) answers, consistently with the layout.

The module asks the guest kernel itself (pfn_valid, pfn_to_online_page, get_dev_pagemap,
pgmap_pfn_valid, zone/node/pgmap of pages it considers initialised). Its answers are checked
against the declared scenario layouts, which test_scenarios.py checks against ndctl and
/proc/iomem:

* nvdimm-mixed: every sampled PFN of a namespace is pfn_valid and not online; one pgmap per
  namespace; ``pgmap_pfn_valid`` is false exactly on the ``--map=dev`` info block + memmap
  reserve (pfn_first() = start + vmem_altmap_offset()); initialised pages are in zone Device
  and point at their pgmap; System RAM is online and has no pgmap; the unpopulated tail of
  section 37 and the sections after it are not pfn_valid.
* kmem: the hot-added blocks are pfn_valid but not online (and have no pgmap) before
  ``daxctl online-memory``, online afterwards (case 1 of Hildenbrand's list).

Where the kernel has no ``pgmap_pfn_valid`` (before v5.12, detected from the symbol table), the
module reports ``-`` and decides "initialised" with the same rule itself. Marker ``lab``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lab import freeze, groundtruth, images
from lab.groundtruth import GroundTruth
from lab.scenarios import (
    KMEM,
    NVDIMM_MIXED,
    IomemEntry,
    apply,
    apply_stage,
    data_offset,
)

pytestmark = pytest.mark.lab

_PAGE = 4096


def _namespace_spans() -> list[tuple[str, str, int, int]]:
    """(dev, map, first pfn, last pfn) of each nvdimm-mixed namespace, from the declared iomem."""
    layout = NVDIMM_MIXED.stages[-1].layout
    spans = []
    for ns in layout.namespaces:
        idx = ns.dev.removeprefix("namespace")
        parts = [e for e in layout.iomem if e.name in (ns.dev, f"dax{idx}")]
        spans.append((ns.dev, ns.map or "", min(e.start for e in parts) // _PAGE,
                      max(e.end for e in parts) // _PAGE))  # fmt: skip
    return spans


def _samples(first: int, last: int, extra: tuple[int, ...] = ()) -> list[int]:
    picks = {first, first + 1, first + 2, last, *range(first, last + 1, 509), *extra}
    return sorted(p for p in picks if first <= p <= last)


def _ram(layout_iomem: tuple[IomemEntry, ...]) -> list[int]:
    return [(e.start + e.end) // 2 // _PAGE for e in layout_iomem if e.name == "System RAM"]


@pytest.fixture(scope="module")
def mixed(kernel_id: str, boot_scenario: Any) -> Iterator[tuple[dict[int, GroundTruth], str, str]]:
    ko = groundtruth.build(kernel_id)
    with boot_scenario(NVDIMM_MIXED, kernel_id) as vm:
        obs = apply(vm, NVDIMM_MIXED)[-1]
        header = groundtruth.load(vm, ko)
        pfns = [p for _, _, a, b in _namespace_spans()
                for p in _samples(a, b, tuple(a + i for i in range(1020, 1030)))]  # fmt: skip
        pfns += [*_ram(obs.iomem), 0x40000, 0x12D000, 0x12FFFF, 0x130000, 0x13FFDF]
        answers = {g.pfn: g for g in groundtruth.query(vm, pfns)}
        release = vm.run("uname -r", check=True).stdout.strip()
    yield answers, header, release


def test_module_header_names_the_running_kernel(mixed: Any, kernel_id: str) -> None:
    _, header, release = mixed
    assert release == images.paths(kernel_id).kver
    assert f"release={release}" in header
    # pgmap_pfn_valid exists since v5.12: detect it from the symbol table, not the release.
    has = "pgmap_pfn_valid" in freeze.kernel_symbols(images.paths(kernel_id).vmlinux)
    assert ("pgmap_pfn_valid=kernel" if has else "pgmap_pfn_valid=mirrored") in header


def test_namespaces_are_valid_device_pfns_with_one_pgmap_each(mixed: Any) -> None:
    answers, _, _ = mixed
    seen: dict[int, str] = {}
    for dev, _, first, last in _namespace_spans():
        got = [g for p, g in answers.items() if first <= p <= last]
        assert got and all(g.pfn_valid and not g.online for g in got), dev
        pgmaps = {g.pgmap for g in got}
        assert len(pgmaps) == 1 and None not in pgmaps, (dev, pgmaps)
        (pgmap,) = pgmaps
        assert pgmap not in seen, f"{dev} shares its pgmap with {seen.get(pgmap)}"
        seen[pgmap] = dev


def test_pgmap_pfn_valid_false_exactly_on_map_dev_reserve(mixed: Any) -> None:
    answers, header, _ = mixed
    for dev, map_, first, last in _namespace_spans():
        raw = (last + 1 - first) * _PAGE
        data_first = first + data_offset(raw, map_) // _PAGE if map_ == "dev" else first
        for p, g in answers.items():
            if not first <= p <= last:
                continue
            initialised = p >= data_first
            if "pgmap_pfn_valid=kernel" in header:
                assert g.pgmap_pfn_valid is initialised, (dev, hex(p))
            else:
                assert g.pgmap_pfn_valid is None
            # The module reads struct page only where the kernel calls it initialised.
            assert (g.zone is not None) is initialised, (dev, hex(p))
            if initialised:
                assert (g.zone, g.page_pgmap) == ("Device", g.pgmap), (dev, hex(p))


def test_system_ram_is_online_without_pgmap(mixed: Any) -> None:
    answers, _, _ = mixed
    ram = [g for g in answers.values() if g.online]
    assert len(ram) >= 2
    for g in ram:
        assert g.pfn_valid and g.pgmap is None and g.zone in ("DMA", "DMA32", "Normal"), g


def test_unpopulated_subsections_and_sections_are_not_valid(mixed: Any) -> None:
    answers, _, _ = mixed
    # 0x40000: above 1 GiB RAM; 0x12d000-0x12ffff: section 37 after D's end (40/64 present);
    # 0x130000-: sections 38-39 of the NVDIMM region that no namespace uses.
    for p in (0x40000, 0x12D000, 0x12FFFF, 0x130000, 0x13FFDF):
        g = answers[p]
        assert not g.pfn_valid and not g.online and g.pgmap is None, g


@pytest.fixture(scope="module")
def kmem_states(kernel_id: str, boot_scenario: Any) -> Iterator[dict[str, list[GroundTruth]]]:
    ko = groundtruth.build(kernel_id)
    first, last = 0x108000, 0x117FFF  # blocks 33-34 (declared in scenarios.KMEM)
    pfns = _samples(first, last)
    states = {}
    with boot_scenario(KMEM, kernel_id) as vm:
        groundtruth.load(vm, ko)
        for stage in KMEM.stages:
            apply_stage(vm, stage)
            states[stage.name] = groundtruth.query(vm, pfns)
    yield states


def test_kmem_offline_blocks_are_valid_but_not_online(kmem_states: Any) -> None:
    for g in kmem_states["kmem-offline"]:
        assert g.pfn_valid and not g.online and g.pgmap is None and g.zone is None, g


def test_kmem_online_blocks_are_online_ram(kmem_states: Any) -> None:
    for g in kmem_states["kmem-online"]:
        assert g.pfn_valid and g.online and g.pgmap is None, g
        assert g.zone in ("Normal", "Movable"), g
