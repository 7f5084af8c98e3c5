"""Lab test: a 1 TiB sparse NVDIMM classified live in the guest (scenario ``scale-ci``).

One boot of kernel 6.1 (scale-ci lists 6.1 only; other kernels skip with that reason) with
a 1 TiB labelled NVDIMM (QEMU needs 44 physical-address bits for it) and three namespaces of
17.4 GiB in all: devdax map=dev, fsdax map=mem and fsdax map=dev, sizes multiples of 16 MiB
but not of 128 MiB.
``python3 -m subsecinspect classify --json`` runs in the guest once; its ranges are checked
against what ``ndctl list -N`` and /proc/iomem say, and its struct-page reads against the
size of the layout. Timing is not asserted here (scripts/bench_classify.py measures it).
Marker ``lab``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.scale import QEMU_ARGS, SCALE_CI, TiB, device_base
from lab.scenarios import (
    Observed,
    apply_stage,
    check_layout,
    data_offset,
)
from subsecinspect.kernel.memmap import SAMPLE_STRIDE

pytestmark = pytest.mark.lab
BASE = device_base(TiB)  # 1 TiB: QEMU skips the AMD HyperTransport hole
PAGE = 4096
PAGES_PER_SECTION = (128 << 20) // PAGE
DEVICE = ("C2_DEV_VALID", "C5_DEV_DRIVER_RESERVED", "C5b_DEV_ALTMAP_MEMMAP", "C3_SUBSECTION_GAP")


@dataclass(frozen=True)
class Run:
    observed: tuple[Observed, ...]
    doc: dict[str, Any]
    classify_s: float


@pytest.fixture(scope="module")
def run(boot_scenario: Any, kernel_id: str) -> Iterator[Run]:
    # scale-ci declares 6.1 only (one kernel is enough for scale; the per-kernel semantics are
    # test_classify_static's): other kernels of $LAB_KERNELS skip with that reason.
    with boot_scenario(
        SCALE_CI, kernel_id, name=f"test-scale-{kernel_id}", qemu_args=list(QEMU_ARGS)
    ) as vm:
        observed = tuple(apply_stage(vm, st) for st in SCALE_CI.stages)
        t0 = time.monotonic()
        r = vm.run("python3 -m subsecinspect classify /proc/kcore --json", timeout=900)
        took = time.monotonic() - t0
    assert r.rc == 0, r.stderr
    print(f"scale-ci: live classify {took:.1f}s in the guest")
    yield Run(observed, json.loads(r.stdout), took)


def _classes(doc: dict[str, Any], a: int, b: int) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [
        (max(a, r["start_pfn"]), min(b, r["end_pfn"]), r["class"], r["evidence"])
        for r in doc["ranges"]
        if r["start_pfn"] < b and r["end_pfn"] > a
    ]


def _cls(cls: str, ev: dict[str, Any]) -> str:
    """The class, or for a live MEMMAP_UNREADABLE range the class its lifecycle implies."""
    return ev.get("lifecycle_class", cls) if cls == "MEMMAP_UNREADABLE" else cls


def _spans(run: Run) -> list[tuple[str, str, int, int, int]]:
    """(dev, map, raw start pfn, data start pfn, end pfn) of every namespace, from the guest."""
    obs = run.observed[-1]
    by = {e.name: e for e in obs.iomem}
    out = []
    for ns in obs.namespaces:
        e = by[ns.dev]
        idx = ns.dev.removeprefix("namespace")
        end = by[f"dax{idx}"].end + 1 if ns.mode == "devdax" else e.end + 1
        out.append((ns.dev, ns.map or "", e.start // PAGE, (end - ns.size) // PAGE, end // PAGE))
    return out


def test_layout_as_declared(run: Run) -> None:
    """The 1 TiB region and the namespaces (sizes, data offsets, iomem) are as declared."""
    for obs, st in zip(run.observed, SCALE_CI.stages, strict=True):
        assert check_layout(obs, st.layout) == []
    pm = next(e for e in run.observed[-1].iomem if e.name == "Persistent Memory")
    assert (pm.start, pm.end + 1) == (BASE, BASE + TiB - 128 * 1024)


def test_namespace_data_is_dev_valid(run: Run) -> None:
    spans = _spans(run)
    assert len(spans) == 3
    for dev, _map, _raw, data, end in spans:
        got = {_cls(c, ev) for _, _, c, ev in _classes(run.doc, data, end)}
        assert got == {"C2_DEV_VALID"}, (dev, got)


def test_namespace_heads_match_data_offset(run: Run) -> None:
    """The head of each namespace is nd_pfn_init()'s offset long; map=dev heads start with the
    two altmap-reserved info-block pages (C5), map=mem heads have an initialised memmap (C2)."""
    for dev, map_, raw, data, end in _spans(run):
        assert (data - raw) * PAGE == data_offset((end - raw) * PAGE, map_), dev
        head = _classes(run.doc, raw, data)
        got = {_cls(c, ev) for _, _, c, ev in head}
        if map_ == "dev":
            assert head[0][:3] == (raw, raw + 2, "C5_DEV_DRIVER_RESERVED"), (dev, head[:2])
            assert got <= set(DEVICE), (dev, head)
        else:
            assert got == {"C2_DEV_VALID"}, (dev, head)


def test_unused_capacity_has_no_memmap(run: Run) -> None:
    """Past the last namespace (1 TiB - 17.4 GiB of the region) nothing is device memory:
    no device class after the last namespace's section, and nothing present up to 2 TiB."""
    last_end = max(s[4] for s in _spans(run))
    tail_start = -(-last_end // PAGES_PER_SECTION) * PAGES_PER_SECTION
    region_end = (BASE + TiB) // PAGE
    assert max(r["end_pfn"] for r in run.doc["ranges"] if r["class"] in DEVICE) <= tail_start
    got = {c for _, _, c, _ in _classes(run.doc, tail_start, region_end)}
    assert got <= {"HOLE", "NO_MEMMAP"}, got
    assert run.doc["end_pfn"] <= region_end


def test_struct_page_reads_do_not_scale_with_pages(run: Run) -> None:
    """classify reads a sample of struct pages, not O(pages) nor 2 per section: per namespace
    2 per sampled section (every SAMPLE_STRIDE-th, the first and last two), 2 per bisection
    step (up to 4 status changes), the subsections of 2 mixed sections, and 80 for the
    frontier search and fingerprints; against 4.5 million device pages."""
    spans = _spans(run)
    pages = sum(end - raw for _, _, raw, _, end in spans)
    sub = PAGES_PER_SECTION // 512  # 2 MiB subsections per section
    steps = SAMPLE_STRIDE.bit_length()
    budget = sum(
        2 * ((end - raw) // PAGES_PER_SECTION // SAMPLE_STRIDE + 4) + 4 * 2 * steps + 2 * sub + 80
        for _, _, raw, _, end in spans
    )
    n = run.doc["stats"]["struct_pages_read"]
    assert 0 < n <= budget < pages // 1000, (n, budget, pages)
