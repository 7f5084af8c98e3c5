"""Lab tests: ``classify`` live and from a dump against ground truth, on the nvdimm-mixed layout.

For each kernel of the matrix: boot the guest of scenario ``nvdimm-mixed`` (1 GiB RAM, a
labelled 1 GiB NVDIMM, fsdax/devdax x map=dev/map=mem namespaces of 192M/96M/160M/272M created
back to back), check the layout the guest reports against the declaration, then run
``python3 -m subsecinspect classify /proc/kcore --json`` in the guest (the on-device
memmaps of the map=dev namespaces read through the BPF reader), again with ``--no-bpf``
(/proc/kcore only), take a QMP ELF dump (``dump-guest-memory``, paging false) into a
temporary file on the host, run ``subsecinspect classify DUMP -s <host vmlinux> --json``
on it and delete the dump. Live must equal the dump range by range.

Ground truth comes from the guest itself (ndctl list -N, /proc/iomem, memory-block states)
plus the kernel rules the layout follows: the pfn info block is 8 KiB (two pages, the altmap
``reserve``) at the namespace start (drivers/nvdimm/pfn_devs.c), the data starts ``size``
bytes before the namespace end, and x86 allocates a section's memmap from the altmap (on the
device, so unreadable through /proc/kcore) only for sections the range covers completely
(arch/x86/mm/init_64.c vmemmap_populate).

Marker ``lab``; the cache is built on demand, so a missing prerequisite fails, never skips.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from bpfstate import guest_state
from classdoc import (
    INFO_BLOCK_PAGES,
    PAGE,
    PAGES_PER_SECTION,
    Namespace,
    classes,
    namespaces,
    range_at,
)

from lab import images
from lab.scenarios import SCENARIOS, Observed, apply, check_layout, labvm

pytestmark = pytest.mark.lab

SCENARIO = SCENARIOS["nvdimm-mixed"]
KERNELS = tuple(k.kernel for k in SCENARIO.kernels if k.supported)
# LAB_KERNELS="6.1 6.12" narrows the kernels, as everywhere in tests/vm.
KERNELS = tuple(k for k in KERNELS if k in (os.environ.get("LAB_KERNELS", "").split() or KERNELS))


@dataclass(frozen=True)
class Run:
    kernel: str
    live: dict[str, Any]
    live_kcore: dict[str, Any]
    live_stderr: str
    left_attached: dict[str, Any]
    dump: dict[str, Any]
    observed: Observed
    namespaces: tuple[Namespace, ...]
    system_ram: tuple[tuple[int, int], ...]
    timings: dict[str, float]


def _classify_json(args: list[str]) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "subsecinspect", "classify", *args, "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module", params=KERNELS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    kernel = request.param
    kp = images.ensure_built(kernel)
    tmp = tmp_path_factory.mktemp(f"classify-{kernel}")
    timings: dict[str, float] = {}
    t = time.monotonic()
    with labvm(SCENARIO, kernel, project=True, name=f"test-classify-{kernel}") as vm:  # boots
        timings["boot"] = time.monotonic() - t
        observed = apply(vm, SCENARIO)[-1]
        problems = check_layout(observed, SCENARIO.stages[-1].layout)
        assert not problems, f"guest layout differs from the declaration: {problems}"
        before = guest_state(vm)
        t = time.monotonic()
        r = vm.run("python3 -m subsecinspect classify /proc/kcore --json", timeout=900)
        timings["live_classify"] = time.monotonic() - t
        assert r.rc == 0, r.stderr
        assert "Traceback" not in r.stderr
        live, live_stderr = json.loads(r.stdout), r.stderr
        left = guest_state(vm).added_since(before)
        t = time.monotonic()
        r = vm.run("python3 -m subsecinspect classify /proc/kcore --json --no-bpf", timeout=600)
        timings["live_classify_no_bpf"] = time.monotonic() - t
        assert r.rc == 0, r.stderr
        live_kcore = json.loads(r.stdout)
        dump = tmp / "guest.vmcore"
        t = time.monotonic()
        vm.dump(dump, "elf")
        timings["dump"] = time.monotonic() - t
    try:
        t = time.monotonic()
        dumped = _classify_json([str(dump), "-s", str(kp.vmlinux)])
        timings["dump_classify"] = time.monotonic() - t
    finally:
        dump.unlink(missing_ok=True)
    system_ram = tuple(
        (-(-e.start // PAGE), (e.end + 1) // PAGE)
        for e in observed.iomem if e.depth == 0 and e.name == "System RAM"
    )
    print(f"{kernel}: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    yield Run(kernel, live, live_kcore, live_stderr, left, dumped, observed,
              namespaces(observed), system_ram, timings)


def assert_exactly(doc: dict[str, Any], start: int, end: int, cls: str) -> None:
    got = classes(doc, start, end)
    assert got == [(start, end, cls)], f"[{start:#x}, {end:#x}) should be {cls}: {got}"


def _unreadable_live(ns: Namespace) -> tuple[int, int] | None:
    """Sections of a map=dev range whose memmap lives on the device (fully covered sections)."""
    first = -(-ns.raw_start // PAGES_PER_SECTION) * PAGES_PER_SECTION
    last = ns.raw_end // PAGES_PER_SECTION * PAGES_PER_SECTION
    return (first, last) if ns.map == "dev" and first < last else None


def test_ranges_cover_every_pfn_once(run: Run) -> None:
    for doc in (run.live, run.live_kcore, run.dump):
        pos = 0
        for r in doc["ranges"]:
            assert r["start_pfn"] == pos and r["end_pfn"] > pos
            pos = r["end_pfn"]
        assert pos == doc["end_pfn"]
        assert doc["kernel"]["release"] == run.live["kernel"]["release"]


def test_system_ram_is_online(run: Run) -> None:
    assert run.system_ram
    for doc in (run.live, run.dump):
        for a, b in run.system_ram:
            assert {c for _, _, c in classes(doc, a, b)} == {"ONLINE_RAM"}, (a, b)


def test_online_memory_blocks_are_online_ram(run: Run) -> None:
    per_block = run.observed.block_size // PAGE
    online = [b for b, s in run.observed.memory_blocks.items() if s == "online"]
    assert online
    for b in online:
        assert {c for _, _, c in classes(run.dump, b * per_block, (b + 1) * per_block)} == {
            "ONLINE_RAM"
        }


def test_namespace_data_is_dev_valid_in_dump(run: Run) -> None:
    assert len(run.namespaces) == 4
    for ns in run.namespaces:
        assert_exactly(run.dump, ns.data_start, ns.raw_end, "C2_DEV_VALID")


def test_map_mem_info_block_memmap_is_initialised(run: Run) -> None:
    # Without an altmap memmap_init_zone_device() starts at the range start.
    for ns in run.namespaces:
        if ns.map == "mem":
            assert_exactly(run.dump, ns.raw_start, ns.raw_end, "C2_DEV_VALID")


def test_map_dev_reserve_and_altmap_memmap_exact(run: Run) -> None:
    dev = [ns for ns in run.namespaces if ns.map == "dev"]
    assert len(dev) == 2
    for ns in dev:
        reserve_end = ns.raw_start + INFO_BLOCK_PAGES
        assert_exactly(run.dump, ns.raw_start, reserve_end, "C5_DEV_DRIVER_RESERVED")
        assert_exactly(run.dump, reserve_end, ns.data_start, "C5b_DEV_ALTMAP_MEMMAP")
        assert_exactly(run.live, ns.raw_start, reserve_end, "C5_DEV_DRIVER_RESERVED")
        ev = range_at(run.dump, ns.raw_start)["evidence"]
        assert ev["altmap_base_pfn"] == ns.raw_start
        assert ev["altmap_reserve"] == INFO_BLOCK_PAGES


def test_partial_tail_section_is_subsection_gap(run: Run) -> None:
    last = run.namespaces[-1]
    section_end = -(-last.raw_end // PAGES_PER_SECTION) * PAGES_PER_SECTION
    assert last.raw_end < section_end, "the layout should end inside a section"
    for doc in (run.live, run.dump):
        assert_exactly(doc, last.raw_end, section_end, "C3_SUBSECTION_GAP")
        assert doc["end_pfn"] == section_end


def test_live_map_dev_memmap_unreadable_exactly_without_bpf(run: Run) -> None:
    """``--no-bpf``: /proc/kcore maps System RAM only, so the on-device memmaps are unknown."""
    want: list[tuple[int, int]] = []
    for ns in run.namespaces:
        span = _unreadable_live(ns)
        if span:
            # The altmap reserve pages are C5 by arithmetic; nothing is read for them.
            a = max(span[0], ns.raw_start + INFO_BLOCK_PAGES)
            want.append((a, span[1]))
    got = []
    for r in run.live_kcore["ranges"]:
        if r["class"] == "MEMMAP_UNREADABLE":
            if got and got[-1][1] == r["start_pfn"]:
                got[-1] = (got[-1][0], r["end_pfn"])
            else:
                got.append((r["start_pfn"], r["end_pfn"]))
    assert got == want
    assert not any(r["class"] == "MEMMAP_UNREADABLE" for r in run.dump["ranges"])


def test_live_without_bpf_agrees_with_the_dump_elsewhere(run: Run) -> None:
    cuts = sorted({r[k] for d in (run.live_kcore, run.dump) for r in d["ranges"]
                   for k in ("start_pfn", "end_pfn")})
    for a, b in itertools.pairwise(cuts):
        lv, dp = range_at(run.live_kcore, a), range_at(run.dump, a)
        if lv["class"] == "MEMMAP_UNREADABLE":
            assert lv["evidence"]["lifecycle_class"] == dp["class"], (a, b)
        else:
            assert lv["class"] == dp["class"], (hex(a), hex(b), lv, dp)


def _classes(doc: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(r["start_pfn"], r["end_pfn"], r["class"]) for r in doc["ranges"]]


def test_live_through_bpf_equals_the_dump(run: Run) -> None:
    """The map=dev memmaps read through BPF: every range and class as in the dump."""
    assert _classes(run.live) == _classes(run.dump)
    assert run.live["end_pfn"] == run.dump["end_pfn"]
    assert not any(r["class"] == "MEMMAP_UNREADABLE" for r in run.live["ranges"])
    assert run.live["stats"]["memmap_bpf_calls"] > 0
    assert "BPF memmap reader unavailable" not in run.live_stderr


def test_live_through_bpf_evidence_equals_the_dump(run: Run) -> None:
    # Only the fingerprint samples' addresses and counters may differ between the two reads.
    for lv, dp in zip(run.live["ranges"], run.dump["ranges"], strict=True):
        assert lv["evidence"] == dp["evidence"], (hex(lv["start_pfn"]), lv, dp)


def test_the_bpf_reader_leaves_nothing_attached(run: Run) -> None:
    assert run.left_attached == {}


def test_struct_pages_read_are_bounded(run: Run) -> None:
    # Readability probes (<= 2 per section piece of each range) + binary-search probes
    # (+ heads) + 2 altmap-free probes: far below one read per page.
    pgmaps = [ns for ns in run.namespaces]
    budget = sum(4 * ((ns.raw_end - ns.raw_start) // PAGES_PER_SECTION + 2) + 80 for ns in pgmaps)
    for doc in (run.live, run.dump):
        n = doc["stats"]["struct_pages_read"]
        assert 0 < n <= budget, (n, budget)
