"""Lab tests: ``classify`` on real kdumps (kexec + makedumpfile inside the guest).

The guest (2 GiB RAM with ``crashkernel=256M``, a labelled 1 GiB NVDIMM with the nvdimm-mixed
namespaces) is classified live, then crashed; the capture kernel writes kdump-compressed
vmcores at two dump levels (lab-notes §15) which are classified on the host and deleted.

Ground truth: /proc/vmcore never holds Persistent Memory, so exactly the memmap that lives on
the device (the sections a ``--map=dev`` range covers completely; the same spans /proc/kcore
cannot read) must be MEMMAP_NOT_CAPTURED, everywhere else the dump must agree with the live
classification. At ``-d 31`` bookworm's makedumpfile 1.7.2 drops in-use kernel pages of newer
kernels (slab, pgmap xarray nodes): the tool must then either agree or say what it could not
read (warnings), never crash.

Marker ``lab``; 5.10 is not in the matrix of lab-notes §15 (kdump untested there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from subsecinspect.lab import images, kdump
from subsecinspect.lab.scenarios import SCENARIOS, apply_stage
from subsecinspect.lab.vm import LabVM, Nvdimm

pytestmark = pytest.mark.lab

KERNELS = ("6.1", "6.12", "7.2")
LEVELS = (
    kdump.MakedumpfileLevel("vmcore-l-d23", ("-l", "-d", "23")),
    kdump.MakedumpfileLevel("vmcore-l-d31", ("-l", "-d", "31")),
)
ALLOWED = {
    "HOLE", "NO_MEMMAP", "EARLY_HOLE", "ONLINE_RAM", "C1_OFFLINE_RAM", "C2_DEV_VALID",
    "C3_SUBSECTION_GAP", "C4_DEV_INITIALISING", "C4b_DEV_TEARDOWN", "C5_DEV_DRIVER_RESERVED",
    "C5b_DEV_ALTMAP_MEMMAP", "IN_FLUX", "MEMMAP_NOT_CAPTURED", "MEMMAP_UNREADABLE", "CORRUPT",
}


@dataclass(frozen=True)
class Result:
    rc: int
    doc: dict[str, Any] | None
    stderr: str


@dataclass(frozen=True)
class Run:
    kernel: str
    live: dict[str, Any]
    dumps: dict[str, Result]


def _classify(path: Path, vmlinux: Path) -> Result:
    r = subprocess.run(
        [sys.executable, "-m", "subsecinspect", "classify", str(path), "-s", str(vmlinux),
         "--json"],
        capture_output=True, text=True, timeout=600,
    )
    return Result(r.returncode, json.loads(r.stdout) if r.returncode == 0 else None, r.stderr)


@pytest.fixture(scope="module", params=KERNELS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    kernel = request.param
    kp = images.ensure_built(kernel)
    tmp = tmp_path_factory.mktemp(f"kdump-{kernel}")
    disk = kdump.make_dump_disk(tmp / "dump.img", kp.vmlinuz, kp.initramfs)
    cores: dict[str, Path] = {}
    try:
        vm = LabVM(kernel, name=f"test-kdump-{kernel}", mem="2G",
                   nvdimms=[Nvdimm("1G", "128K")], append=[kdump.CRASHKERNEL],
                   disks=[disk], project=True)
        with vm:  # boots
            apply_stage(vm, SCENARIOS["nvdimm-mixed"].stages[0])
            r = vm.run("python3 -m subsecinspect classify /proc/kcore --json", timeout=600)
            assert r.rc == 0, r.stderr
            live = json.loads(r.stdout)
            res = kdump.kdump(vm, disk, tmp, LEVELS)
            cores = res.vmcores
        dumps = {name: _classify(path, kp.vmlinux) for name, path in cores.items()}
    finally:
        kdump.remove_dumps(disk, *cores.values())
    for name, res in dumps.items():
        summary = [(s["class"], s["pages"]) for s in (res.doc or {}).get("summary", [])]
        warnings = (res.doc or {}).get("warnings", [])
        print(f"{kernel} {name}: rc {res.rc} {summary} warnings {warnings}")
    yield Run(kernel, live, dumps)


def _by_pfn(doc: dict[str, Any]) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [(r["start_pfn"], r["end_pfn"], r["class"], r["evidence"]) for r in doc["ranges"]]


def _at(doc: dict[str, Any], pfn: int) -> tuple[str, dict[str, Any]]:
    for a, b, c, ev in _by_pfn(doc):
        if a <= pfn < b:
            return c, ev
    raise AssertionError(f"pfn {pfn:#x} in no range")


def _compare(live: dict[str, Any], dump: dict[str, Any]) -> list[str]:
    """Differences outside the live-unreadable / dump-not-captured memmap spans."""
    cuts = sorted({r[k] for d in (live, dump) for r in d["ranges"]
                   for k in ("start_pfn", "end_pfn")})
    diffs = []
    for a in cuts[:-1]:
        (lc, lev), (dc, dev) = _at(live, a), _at(dump, a)
        if lc == "MEMMAP_UNREADABLE":
            same = dev.get("lifecycle_class") == lev.get("lifecycle_class")
            if dc != "MEMMAP_NOT_CAPTURED" or not same:
                diffs.append(f"{a:#x}: live {lc}/{lev.get('lifecycle_class')} dump {dc}")
        elif lc != dc:
            diffs.append(f"{a:#x}: live {lc} dump {dc}")
    return diffs


def test_all_levels_classify_without_error(run: Run) -> None:
    assert set(run.dumps) == {lv.name for lv in LEVELS}
    for name, res in run.dumps.items():
        assert "Traceback" not in res.stderr, name
        assert res.rc == 0, f"{name}: {res.stderr}"
        assert res.doc is not None
        assert res.doc["target"]["format"] == "kdump"
        assert {r["class"] for r in res.doc["ranges"]} <= ALLOWED


def test_d23_agrees_with_live_and_marks_device_memmap_not_captured(run: Run) -> None:
    doc = run.dumps["vmcore-l-d23"].doc
    assert doc is not None
    assert _compare(run.live, doc) == []
    live_unreadable = sum(b - a for a, b, c, _ in _by_pfn(run.live) if c == "MEMMAP_UNREADABLE")
    not_captured = sum(b - a for a, b, c, _ in _by_pfn(doc) if c == "MEMMAP_NOT_CAPTURED")
    assert live_unreadable > 0
    assert not_captured == live_unreadable


def test_d31_agrees_or_says_what_it_could_not_read(run: Run) -> None:
    res = run.dumps["vmcore-l-d31"]
    assert res.doc is not None
    diffs = _compare(run.live, res.doc)
    if diffs:
        assert res.doc["warnings"], f"silent disagreement with live: {diffs[:10]}"
