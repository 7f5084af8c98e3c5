"""Lab tests: virtio-mem and memmap_on_memory, classified PFN by PFN against the kernel itself.

One guest per scenario and kernel (module-scoped): after every stage the declared layout is
checked (/proc/iomem, memory blocks), ``classify /proc/kcore --json`` runs in the guest, a QMP
ELF dump is classified on the host, and the ground-truth module's ``memstate`` answers
(``pfn_to_online_page()``, ``PageOffline()``, ``PageVmemmapSelfHosted()``, zone) are read
for every PFN of the device-memory window's first 256/384 MiB. The class each PFN must have
follows from those answers alone:

* not online: C1_OFFLINE_RAM where a memory block exists, HOLE where none does (a removed
  virtio-mem block);
* online and ``PageVmemmapSelfHosted()``: RAM_VMEMMAP_SELF_HOSTED;
* online and ``PageOffline()``: RAM_LOGICALLY_OFFLINE;
* online otherwise: ONLINE_RAM.

/proc/kpageflags (``KPF_OFFLINE``, bit 23) is a second witness for the PageOffline spans, and
both must equal the spans declared in the scenario data. Live equals dump over the window.
Marker ``lab``; kernels the scenario declares unsupported are skipped with its reason.
"""

from __future__ import annotations

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
from classdoc import PAGES_PER_SECTION, classes

from lab import groundtruth, images
from lab.groundtruth import MemState
from lab.kdump import dump_elf
from lab.scenarios import SCENARIOS, Observed, Scenario, apply_stage, check_layout
from lab.scenarios_ram import MOM_VMEMMAP, VIRTIO_MEM_OFFLINE, kpageflags_offline_script

pytestmark = pytest.mark.lab

_LO = 0x100000  # section / block 32: the device-memory window of the pc machine
_HI = {"virtio-mem": 0x118000, "memmap-on-memory": 0x108000}


@dataclass(frozen=True, slots=True)
class StageRun:
    """One stage of one guest: both classifications, the layout and the kernel's answers."""

    stage: str
    header: str  # the module's memstate header line
    truth: tuple[MemState, ...]  # its answers over the window, as runs
    kpageflags_offline: tuple[tuple[int, int], ...]  # KPF_OFFLINE runs
    live: dict[str, Any]  # classify /proc/kcore --json in the guest
    dump: dict[str, Any]  # classify of the QMP ELF dump on the host
    observed: Observed


def _classify_host(dump: Path, vmlinux: Path) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "subsecinspect", "classify", str(dump), "-s", str(vmlinux),
         "--json"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _kpageflags_offline(vm: Any, lo: int, hi: int) -> tuple[tuple[int, int], ...]:
    r = vm.run(kpageflags_offline_script(lo, hi), timeout=120)
    assert r.rc == 0, r.stderr
    return tuple((int(a, 16), int(b, 16)) for a, b in (x.split() for x in r.stdout.splitlines()))


def _boot(scenario: Scenario, kernel: str, tmp: Path, boot_scenario: Any) -> dict[str, StageRun]:
    kp = images.ensure_built(kernel)
    ko = groundtruth.build(kernel)
    hi = _HI[scenario.name]
    out: dict[str, StageRun] = {}
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    with boot_scenario(scenario, kernel, project=True,
                       name=f"test-ram-{scenario.name}-{kernel}-{os.getpid()}") as vm:
        timings["boot"] = time.monotonic() - t0
        groundtruth.load(vm, ko)
        for stage in scenario.stages:
            t = time.monotonic()
            observed = apply_stage(vm, stage)
            assert check_layout(observed, stage.layout) == [], stage.name
            timings[f"{stage.name}:setup"] = time.monotonic() - t
            r = vm.run("python3 -m subsecinspect classify /proc/kcore --json", timeout=600)
            assert r.rc == 0, r.stderr
            live = json.loads(r.stdout)
            header, truth = groundtruth.memstate(vm, _LO, hi)
            kpf = _kpageflags_offline(vm, _LO, hi)
            dump = tmp / f"{scenario.name}-{stage.name}.vmcore"
            try:
                t = time.monotonic()
                dump_elf(vm, dump)
                dumped = _classify_host(dump, kp.vmlinux)
                timings[f"{stage.name}:dump+classify"] = time.monotonic() - t
            finally:
                dump.unlink(missing_ok=True)
            out[stage.name] = StageRun(stage.name, header, tuple(truth), kpf, live, dumped,
                                       observed)
    timings["total"] = time.monotonic() - t0
    print(f"\n{scenario.name} {kernel}: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return out


@pytest.fixture(scope="module")
def vmem(kernel_id: str, boot_scenario: Any,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    return _boot(SCENARIOS["virtio-mem"], kernel_id, tmp_path_factory.mktemp("vmem"),
                 boot_scenario)


@pytest.fixture(scope="module")
def mom(kernel_id: str, boot_scenario: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StageRun]]:
    yield _boot(SCENARIOS["memmap-on-memory"], kernel_id, tmp_path_factory.mktemp("mom"),
                boot_scenario)


def _merge(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for a, b, c in spans:
        if out and out[-1][1] == a and out[-1][2] == c:
            out[-1] = (out[-1][0], b, c)
        else:
            out.append((a, b, c))
    return out


def _expected(run: StageRun) -> list[tuple[int, int, str]]:
    """The class of every PFN of the window, from the kernel's own answers (module doc)."""
    blocks = run.observed.memory_blocks
    spans = []
    for m in run.truth:
        if not m.online:
            # split at block boundaries: a block that exists is C1, one that does not is HOLE
            a = m.start
            while a < m.end:
                b = min(m.end, (a // PAGES_PER_SECTION + 1) * PAGES_PER_SECTION)
                spans.append((a, b, "C1_OFFLINE_RAM" if a // PAGES_PER_SECTION in blocks
                               else "HOLE"))
                a = b
        elif m.self_hosted:
            spans.append((m.start, m.end, "RAM_VMEMMAP_SELF_HOSTED"))
        elif m.offline:
            spans.append((m.start, m.end, "RAM_LOGICALLY_OFFLINE"))
        else:
            spans.append((m.start, m.end, "ONLINE_RAM"))
    return _merge(spans)


def _offline_spans(run: StageRun) -> tuple[tuple[int, int], ...]:
    return tuple((a, b) for a, b, c in _expected(run) if c == "RAM_LOGICALLY_OFFLINE")


def _doc_classes(doc: dict[str, Any], lo: int, hi: int) -> list[tuple[int, int, str]]:
    """The classes of *doc* over ``[lo, hi)``; past its ``end_pfn`` (the end of the highest
    present section, README § JSON contract) there is no section: HOLE."""
    spans = classes(doc, lo, hi)
    if doc["end_pfn"] < hi:
        spans.append((max(lo, doc["end_pfn"]), hi, "HOLE"))
    return _merge(spans)


def _check(run: StageRun, hi: int) -> None:
    want = _expected(run)
    assert want[0][0] == _LO and want[-1][1] == hi, "the module did not answer every PFN"
    assert not [w for w in run.live["warnings"] if "page type" in w], run.live["warnings"]
    # the page types of every online hot-added section were read, and nothing else
    online = sum(1 for b, st in run.observed.memory_blocks.items() if b >= 32 and st == "online")
    assert run.live["stats"]["page_type_sections_read"] == online
    assert _doc_classes(run.live, _LO, hi) == want, run.stage
    assert _doc_classes(run.dump, _LO, hi) == want, run.stage


@pytest.mark.parametrize("stage", ["plugged-300M", "resized-200M"])
def test_virtio_mem_classes_equal_the_kernels_answers(vmem: dict[str, StageRun],
                                                      stage: str) -> None:
    _check(vmem[stage], _HI["virtio-mem"])


@pytest.mark.parametrize("stage", ["plugged-300M", "resized-200M"])
def test_virtio_mem_offline_spans_as_declared_and_in_kpageflags(vmem: dict[str, StageRun],
                                                                stage: str) -> None:
    run = vmem[stage]
    declared = (VIRTIO_MEM_OFFLINE[stage],)
    assert _offline_spans(run) == declared
    assert run.kpageflags_offline == declared


def test_virtio_mem_removed_block_is_a_hole(vmem: dict[str, StageRun]) -> None:
    run = vmem["resized-200M"]
    assert 34 not in run.observed.memory_blocks
    assert run.live["end_pfn"] == run.dump["end_pfn"] == 0x110000
    assert _doc_classes(run.dump, 0x110000, 0x118000) == [(0x110000, 0x118000, "HOLE")]


@pytest.mark.parametrize("stage", ["hot-added", "onlined"])
def test_memmap_on_memory_classes_equal_the_kernels_answers(mom: dict[str, StageRun],
                                                            stage: str) -> None:
    _check(mom[stage], _HI["memmap-on-memory"])


def test_memmap_on_memory_self_hosted_pages_are_the_declared_512(
        mom: dict[str, StageRun]) -> None:
    run = mom["onlined"]
    assert "self_hosted=kernel" in run.header
    hosted = [(a, b) for a, b, c in _expected(run) if c == "RAM_VMEMMAP_SELF_HOSTED"]
    assert hosted == [MOM_VMEMMAP]
    (r,) = [r for r in run.live["ranges"] if r["class"] == "RAM_VMEMMAP_SELF_HOSTED"]
    assert r["evidence"]["nr_vmemmap_pages"] == MOM_VMEMMAP[1] - MOM_VMEMMAP[0]
    assert "vmemmap_self_hosted" in r["evidence"]["marker"]
    assert mom["hot-added"].live["ranges"]  # the offline stage was classified too
