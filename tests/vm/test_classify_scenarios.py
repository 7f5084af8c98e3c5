"""Lab tests: ``classify`` live and from a dump against ground truth, on the other static scenarios.

test_classify_static.py covers nvdimm-mixed; this file covers ``legacy-pmem``, ``dimm-offline``
and ``kmem`` (stages kmem-offline, then kmem-online in the same guest). For each scenario and
each kernel that runs it (``Scenario.support``; ``LAB_KERNELS`` narrows): ONE boot, then per
stage: the layout the guest reports must equal the declaration, ``python3 -m subsecinspect
classify /proc/kcore --json`` runs in the guest, a QMP ELF dump is taken into a temporary file
on the host, classified there with ``-s <host vmlinux>`` and deleted at once.

Ground truth is what the guest itself reports (/proc/iomem, memory-block states, ndctl list,
block size) plus the kernel rules the layouts follow:

* a memory block's pages are ONLINE_RAM when the block is online, C1_OFFLINE_RAM with
  ``block_state`` "offline" when it is offline (online_pages() never ran:
  drivers/base/memory.c memory_block_online());
* pfn/dax namespaces with ``map=dev``: the 8 KiB info block (two pages, the altmap ``reserve``,
  drivers/nvdimm/pfn_devs.c) is C5, the rest before the data (the altmap ``free`` pages) C5b,
  the data C2;
* where /proc/kcore cannot read a memmap (a ``map=dev`` memmap on the device), the live run
  says MEMMAP_UNREADABLE and its ``lifecycle_class`` must be what the dump decides.

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
from pathlib import Path
from typing import Any

import pytest
from classdoc import INFO_BLOCK_PAGES, PAGE, PAGES_PER_SECTION, namespaces, range_at

from lab import groundtruth, images
from lab.groundtruth import GroundTruth
from lab.kdump import dump_elf
from lab.scenarios import (
    SCENARIOS,
    Observed,
    Scenario,
    apply_stage,
    check_layout,
    labvm,
)

pytestmark = pytest.mark.lab

_WANTED = os.environ.get("LAB_KERNELS", "").split()


def _kernels(name: str) -> tuple[str, ...]:
    """Kernels that run scenario *name* (``Scenario.support``), narrowed by ``LAB_KERNELS``."""
    sc = SCENARIOS[name]
    ks = tuple(k.kernel for k in sc.kernels if sc.support(k.kernel).supported)
    return tuple(k for k in ks if k in (_WANTED or ks))


@dataclass(frozen=True)
class StageRun:
    kernel: str
    stage: str
    live: dict[str, Any]
    dump: dict[str, Any]
    observed: Observed
    truth: tuple[tuple[str, GroundTruth], ...]  # (dump class, the kernel's answers) per sample


def _ram(obs: Observed) -> tuple[tuple[int, int], ...]:
    """Whole pages of the "System RAM" / "System RAM (kmem)" entries of /proc/iomem."""
    return tuple(
        (-(-e.start // PAGE), (e.end + 1) // PAGE)
        for e in obs.iomem if e.name in ("System RAM", "System RAM (kmem)")
    )


def _section_ceil(pfn: int) -> int:
    return -(-pfn // PAGES_PER_SECTION) * PAGES_PER_SECTION


def _classify_host(dump: Path, vmlinux: Path) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "subsecinspect", "classify", str(dump), "-s", str(vmlinux),
         "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


def _boot(scenario: Scenario, kernel: str, tmp: Path) -> dict[str, StageRun]:
    """One guest for *scenario* on *kernel*; every stage classified live and from a dump."""
    kp = images.ensure_built(kernel)
    ko = groundtruth.build(kernel)
    out: dict[str, StageRun] = {}
    timings: dict[str, float] = {}
    t0 = t = time.monotonic()
    with labvm(scenario, kernel, project=True,
               name=f"test-clscen-{scenario.name}-{kernel}-{os.getpid()}") as vm:  # boots
        timings["boot"] = time.monotonic() - t
        for stage in scenario.stages:
            observed = apply_stage(vm, stage)
            problems = check_layout(observed, stage.layout)
            assert problems == [], f"{stage.name}: layout differs from the declaration: {problems}"
            t = time.monotonic()
            r = vm.run("python3 -m subsecinspect classify /proc/kcore --json", timeout=600)
            timings[f"{stage.name}:live"] = time.monotonic() - t
            assert r.rc == 0, r.stderr
            assert "Traceback" not in r.stderr
            live = json.loads(r.stdout)
            dump = tmp / f"{scenario.name}-{stage.name}.vmcore"
            try:
                t = time.monotonic()
                dump_elf(vm, dump)
                timings[f"{stage.name}:dump"] = time.monotonic() - t
                t = time.monotonic()
                dumped = _classify_host(dump, kp.vmlinux)
                timings[f"{stage.name}:dump_classify"] = time.monotonic() - t
            finally:
                dump.unlink(missing_ok=True)
            t = time.monotonic()
            if not out:
                groundtruth.load(vm, ko)
            samples = _samples(dumped)
            answers = {g.pfn: g for g in groundtruth.query(vm, samples)}
            assert set(answers) == set(samples)
            truth = tuple((samples[p], answers[p]) for p in sorted(samples))
            timings[f"{stage.name}:groundtruth"] = time.monotonic() - t
            out[stage.name] = StageRun(kernel, stage.name, live, dumped, observed, truth)
    timings["total"] = time.monotonic() - t0
    print(f"\n{scenario.name} {kernel}: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return out


_SAMPLED = ("HOLE", "ONLINE_RAM", "C1_OFFLINE_RAM", "C2_DEV_VALID", "C5_DEV_DRIVER_RESERVED",
            "C5b_DEV_ALTMAP_MEMMAP")


def _samples(doc: dict[str, Any]) -> dict[int, str]:
    """First, middle and last PFN of every range of the classes the module can confirm."""
    out: dict[int, str] = {}
    for r in doc["ranges"]:
        if r["class"] in _SAMPLED:
            a, b = r["start_pfn"], r["end_pfn"]
            for p in (a, (a + b) // 2, b - 1):
                out[p] = r["class"]
    assert len(out) < 60000
    return out


@pytest.fixture(scope="module", params=_kernels("legacy-pmem"))
def legacy(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[StageRun]:
    runs = _boot(SCENARIOS["legacy-pmem"], request.param, tmp_path_factory.mktemp("legacy"))
    yield runs["fsdax-dev"]


@pytest.fixture(scope="module", params=_kernels("dimm-offline"))
def dimm(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[StageRun]:
    runs = _boot(SCENARIOS["dimm-offline"], request.param, tmp_path_factory.mktemp("dimm"))
    yield runs["hot-added"]


@pytest.fixture(scope="module", params=_kernels("kmem"))
def kmem(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StageRun]]:
    yield _boot(SCENARIOS["kmem"], request.param, tmp_path_factory.mktemp("kmem"))


# --- helpers over the JSON documents ------------------------------------------------------------

def pieces(doc: dict[str, Any], start: int, end: int) -> list[dict[str, Any]]:
    """The ranges of *doc* that meet ``[start, end)``."""
    return [r for r in doc["ranges"] if r["start_pfn"] < end and r["end_pfn"] > start]


def effective(r: dict[str, Any]) -> str:
    """A range's class, MEMMAP_UNREADABLE replaced by what the lifecycle metadata implies."""
    if r["class"] == "MEMMAP_UNREADABLE":
        return str(r["evidence"]["lifecycle_class"])
    return str(r["class"])


def classes(doc: dict[str, Any], start: int, end: int) -> list[tuple[int, int, str]]:
    """Effective classes over ``[start, end)``, clipped, adjacent equal classes merged."""
    out: list[tuple[int, int, str]] = []
    for r in pieces(doc, start, end):
        a, b, c = max(start, r["start_pfn"]), min(end, r["end_pfn"]), effective(r)
        if out and out[-1][2] == c and out[-1][1] == a:
            out[-1] = (out[-1][0], b, c)
        else:
            out.append((a, b, c))
    return out


def assert_exactly(run: StageRun, start: int, end: int, cls: str) -> None:
    for name, doc in (("live", run.live), ("dump", run.dump)):
        got = classes(doc, start, end)
        want = [(start, end, cls)]
        assert got == want, f"{run.kernel} {run.stage} {name}: [{start:#x}, {end:#x}) " \
                            f"should be {cls}: {[(hex(a), hex(b), c) for a, b, c in got]}"


def check_common(run: StageRun) -> None:
    """Coverage, kernel release, agreement live/dump, RAM by memory-block state."""
    for doc in (run.live, run.dump):
        pos = 0
        for r in doc["ranges"]:
            assert r["start_pfn"] == pos and r["end_pfn"] > pos, (run.stage, r)
            pos = r["end_pfn"]
        assert pos == doc["end_pfn"] > 0
        assert doc["kernel"]["release"] == run.live["kernel"]["release"]
    assert run.live["end_pfn"] == run.dump["end_pfn"]
    assert not any(r["class"] == "MEMMAP_UNREADABLE" for r in run.dump["ranges"])
    cuts = sorted({r[k] for d in (run.live, run.dump) for r in d["ranges"]
                   for k in ("start_pfn", "end_pfn")})
    for a, b in itertools.pairwise(cuts):
        lv, dp = range_at(run.live, a), range_at(run.dump, a)
        assert effective(lv) == dp["class"], (run.stage, hex(a), hex(b), lv, dp)
    check_ram_by_block_state(run)
    check_ground_truth(run)


def check_ground_truth(run: StageRun) -> None:
    """The kernel's own predicates (subsec_gt) on sample PFNs of each class of the dump.

    kernel-semantics §5.2: before v5.12 pfn_to_online_page() was a macro testing only
    online_section_nr(), so it returns the page of a ZONE_DEVICE PFN that shares an online early
    section with System RAM (the collision of §5.3); since 1f90a3477df3 it returns NULL there.
    Which one this kernel has is read from the debug info (feature "pfn_to_online_page_fn").
    """
    out_of_line = "pfn_to_online_page_fn" in run.dump["kernel"]["features"]
    per_block = run.observed.block_size // PAGE
    seen = {c for c, _ in run.truth}
    assert "ONLINE_RAM" in seen
    for cls, g in run.truth:
        where = (run.kernel, run.stage, cls, g)
        if cls == "HOLE":
            assert not g.pfn_valid, where
        elif cls == "ONLINE_RAM":
            assert g.pfn_valid and g.online and g.pgmap is None, where
        elif cls == "C1_OFFLINE_RAM":  # pfn_valid() true, pfn_to_online_page() NULL
            assert g.pfn_valid and not g.online and g.pgmap is None and g.zone is None, where
        else:  # C2 / C5 / C5b: a dev_pagemap claims the PFN
            collision = run.observed.memory_blocks.get(g.pfn // per_block) == "online"
            assert g.pfn_valid and g.pgmap is not None, where
            assert g.online == (collision and not out_of_line), (out_of_line, collision, where)
            if cls == "C2_DEV_VALID":
                assert g.pgmap_pfn_valid is not False, where
                assert (g.zone, g.page_pgmap) == ("Device", g.pgmap), where
            else:  # before pfn_first(): pgmap_pfn_valid() false (or mirrored: "-")
                assert g.pgmap_pfn_valid is not True, where
                if not g.online:
                    assert g.zone is None, where


def check_ram_by_block_state(run: StageRun) -> None:
    """Every page of System RAM follows the state of its memory block (C1 iff not online)."""
    per_block = run.observed.block_size // PAGE
    ram = _ram(run.observed)
    assert ram
    for a, b in ram:
        for blk in range(a // per_block, (b - 1) // per_block + 1):
            state = run.observed.memory_blocks.get(blk)
            assert state is not None, f"System RAM [{a:#x}, {b:#x}) in block {blk}: no block"
            lo, hi = max(a, blk * per_block), min(b, (blk + 1) * per_block)
            for name, doc in (("live", run.live), ("dump", run.dump)):
                for r in pieces(doc, lo, hi):
                    where = (run.kernel, run.stage, name, blk, state, hex(lo), hex(hi), r)
                    if state == "online":
                        assert r["class"] == "ONLINE_RAM", where
                    else:
                        assert r["class"] == "C1_OFFLINE_RAM", where
                        assert r["evidence"].get("block_state") == state, where


# --- legacy-pmem: e820 pmem in early System RAM sections (kernel-semantics §5.3) -----------------

def test_legacy_pmem_common(legacy: StageRun) -> None:
    check_common(legacy)


def test_legacy_pmem_namespace_classes(legacy: StageRun) -> None:
    (ns,) = namespaces(legacy.observed)
    assert ns.map == "dev"
    reserve_end = ns.raw_start + INFO_BLOCK_PAGES
    assert_exactly(legacy, ns.raw_start, reserve_end, "C5_DEV_DRIVER_RESERVED")
    assert_exactly(legacy, reserve_end, ns.data_start, "C5b_DEV_ALTMAP_MEMMAP")
    assert_exactly(legacy, ns.data_start, ns.raw_end, "C2_DEV_VALID")
    ev = range_at(legacy.dump, ns.raw_start)["evidence"]
    assert ev["altmap_base_pfn"] == ns.raw_start
    assert ev["altmap_reserve"] == INFO_BLOCK_PAGES


def test_legacy_pmem_shared_early_sections(legacy: StageRun) -> None:
    # The sections holding both boot System RAM and the pmem are early sections (their memmap
    # came from the boot allocation, every subsection valid): the RAM in them stays ONLINE_RAM
    # (checked page by page in check_ram_by_block_state) and nothing in them is a C3 gap or an
    # early hole: they are exactly RAM + the namespace's C5/C5b/C2.
    (ns,) = namespaces(legacy.observed)
    ram = _ram(legacy.observed)
    shared = sorted({
        s for a, b in ram for s in range(a // PAGES_PER_SECTION, (b - 1) // PAGES_PER_SECTION + 1)
        if s * PAGES_PER_SECTION < ns.raw_end and (s + 1) * PAGES_PER_SECTION > ns.raw_start
    })
    assert shared, "the legacy pmem should share sections with System RAM"
    allowed = {"ONLINE_RAM", "C5_DEV_DRIVER_RESERVED", "C5b_DEV_ALTMAP_MEMMAP", "C2_DEV_VALID"}
    for s in shared:
        lo, hi = s * PAGES_PER_SECTION, (s + 1) * PAGES_PER_SECTION
        for name, doc in (("live", legacy.live), ("dump", legacy.dump)):
            got = {c for _, _, c in classes(doc, lo, hi)}
            assert got <= allowed and "ONLINE_RAM" in got, (legacy.kernel, name, s, got)
            # ONLINE_RAM exactly where the section is System RAM and not the namespace
            for a, b, c in classes(doc, lo, hi):
                in_ns = ns.raw_start <= a and b <= ns.raw_end
                assert (c != "ONLINE_RAM") == in_ns, (legacy.kernel, name, s, hex(a), hex(b), c)


def test_legacy_pmem_no_subsection_gap_in_boot_blocks(legacy: StageRun) -> None:
    per_block = legacy.observed.block_size // PAGE
    for blk in legacy.observed.memory_blocks:
        for name, doc in (("live", legacy.live), ("dump", legacy.dump)):
            got = {c for _, _, c in classes(doc, blk * per_block, (blk + 1) * per_block)}
            assert not got & {"C3_SUBSECTION_GAP", "C4_DEV_INITIALISING"}, (name, blk, got)


# --- dimm-offline: a hot-added pc-dimm left offline ---------------------------------------------

def test_dimm_offline_common(dimm: StageRun) -> None:
    check_common(dimm)


def test_dimm_offline_blocks_are_c1(dimm: StageRun) -> None:
    per_block = dimm.observed.block_size // PAGE
    offline = sorted(b for b, s in dimm.observed.memory_blocks.items() if s == "offline")
    assert offline, "the hot-added DIMM should have offline memory blocks"
    # The offline blocks are exactly the hot-added System RAM above the boot RAM.
    top = max(_ram(dimm.observed), key=lambda r: r[0])
    assert (offline[0] * per_block, (offline[-1] + 1) * per_block) == top
    for blk in offline:
        lo, hi = blk * per_block, (blk + 1) * per_block
        assert_exactly(dimm, lo, hi, "C1_OFFLINE_RAM")
        for doc in (dimm.live, dimm.dump):
            for r in pieces(doc, lo, hi):
                assert r["evidence"]["block_state"] == "offline", r
    for doc in (dimm.live, dimm.dump):
        assert doc["end_pfn"] == _section_ceil(top[1])


# --- kmem: a devdax namespace handed to the kmem driver ------------------------------------------

def _check_kmem(run: StageRun, want: str) -> None:
    check_common(run)
    kmem_ram = [(-(-e.start // PAGE), (e.end + 1) // PAGE)
                for e in run.observed.iomem if e.name == "System RAM (kmem)"]
    assert len(kmem_ram) == 1
    (a, b), = kmem_ram
    assert_exactly(run, a, b, want)
    if want == "C1_OFFLINE_RAM":
        for doc in (run.live, run.dump):
            assert {r["evidence"]["block_state"] for r in pieces(doc, a, b)} == {"offline"}
    # The rest of the devdax namespace: kmem took the dax device from device_dax, so no
    # devm_memremap_pages() ran (no dev_pagemap) and only kmem's add_memory_driver_managed()
    # added sections, for whole memory blocks. The namespace head and tail outside the kmem
    # range therefore lie in sections never added: HOLE, or past end_pfn (the end of the
    # highest present section, which is the kmem range's last section).
    # The namespace keeps its head in /proc/iomem; its data (ndctl's ``size``) follows the head,
    # and kmem's "dax0.0" covers only the part trimmed to whole memory blocks.
    (ns,) = run.observed.namespaces
    head = next(e for e in run.observed.iomem if e.name == ns.dev)
    ns_start, ns_end = head.start // PAGE, (head.end + 1 + ns.size) // PAGE
    assert ns_start < a and b < ns_end, (hex(ns_start), hex(a), hex(b), hex(ns_end))
    for doc in (run.live, run.dump):
        assert doc["end_pfn"] == _section_ceil(b)
        assert not any(r["class"].startswith(("C2", "C3", "C4", "C5")) for r in doc["ranges"])
    assert_exactly(run, ns_start, a, "HOLE")
    if b < run.dump["end_pfn"]:
        assert_exactly(run, b, min(ns_end, run.dump["end_pfn"]), "HOLE")


def test_kmem_offline(kmem: dict[str, StageRun]) -> None:
    _check_kmem(kmem["kmem-offline"], "C1_OFFLINE_RAM")


def test_kmem_online(kmem: dict[str, StageRun]) -> None:
    _check_kmem(kmem["kmem-online"], "ONLINE_RAM")
