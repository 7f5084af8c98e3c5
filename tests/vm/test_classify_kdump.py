"""Lab tests: real kdumps (kexec + makedumpfile inside the guest), opened with drgn and classified.

One kdump per kernel, on every kernel of the matrix: the guest (2 GiB RAM with
``crashkernel=256M``, the nvdimm-mixed NVDIMM and namespaces) is classified live, then crashed;
the capture kernel writes kdump-compressed vmcores at three makedumpfile levels
(``-c -d 31``, ``-l -d 23``, ``-l -d 0``; lab-notes §15), which are read with drgn, classified
on the host and deleted.

* drgn opens every level and ``init_uts_ns.name.release`` equals the guest's ``uname -r``;
  the filtered ``-d 31`` file is smaller than the unfiltered ``-d 0`` one.
* Every level classifies (``--json``, exit 0, no traceback, only known classes).
* /proc/vmcore never holds Persistent Memory, so exactly the memmap that lives on the device
  (the sections a ``--map=dev`` range covers completely; the same spans /proc/kcore cannot read,
  so the live side here is ``--no-bpf``) must be MEMMAP_NOT_CAPTURED, everywhere else ``-d 23``
  and ``-d 0`` must agree with the live classification. Live through the BPF reader, those
  spans are read: their class must be what the dump's ``lifecycle_class`` implies. At
  ``-d 31`` bookworm's makedumpfile 1.7.2 drops in-use kernel pages of newer
  kernels (slab, pgmap xarray nodes): the tool must then either agree or say what it could not
  read (warnings), never crash.

Marker ``lab``; parametrised over the kernels of the matrix (``LAB_KERNELS`` narrows it).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from classdoc import degraded_summary, range_at
from dumpopen import drgn_release

from lab import images, kdump
from lab.layout import GiB
from lab.scenarios import NVDIMM_MIXED, apply_stage

pytestmark = pytest.mark.lab

D31, D23, D0 = "vmcore-c-d31", "vmcore-l-d23", "vmcore-l-d0"
LEVELS = (
    kdump.MakedumpfileLevel(D31, ("-c", "-d", "31")),
    kdump.MakedumpfileLevel(D23, ("-l", "-d", "23")),
    kdump.MakedumpfileLevel(D0, ("-l", "-d", "0")),
)
#: nvdimm-mixed with room for the crashkernel reservation and live drgn (lab-notes §15).
KDUMP_GUEST = dataclasses.replace(NVDIMM_MIXED, name="nvdimm-mixed-kdump", mem=2 * GiB)
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
    release: str  # the guest's uname -r
    live: dict[str, Any]
    live_bpf: dict[str, Any]
    dumps: dict[str, Result]
    opened: dict[str, str]  # level -> init_uts_ns release read by drgn, or the error
    sizes: dict[str, int]


def _classify(path: Path, vmlinux: Path) -> Result:
    r = subprocess.run(
        [sys.executable, "-m", "subsecinspect", "classify", str(path), "-s", str(vmlinux),
         "--json"],
        capture_output=True, text=True, timeout=600,
    )
    return Result(r.returncode, json.loads(r.stdout) if r.returncode == 0 else None, r.stderr)


def _drgn_release(core: Path, vmlinux: Path) -> str:
    try:
        return drgn_release(core, vmlinux)
    except Exception as e:  # reported by the release test
        return f"drgn failed: {type(e).__name__}: {e}"


@pytest.fixture(scope="module")
def run(
    kernel_id: str, tmp_path_factory: pytest.TempPathFactory, boot_scenario: Any
) -> Iterator[Run]:
    kp = images.paths(kernel_id)
    tmp = tmp_path_factory.mktemp(f"kdump-{kernel_id}")
    disk = tmp / "dump.img"
    cores: dict[str, Path] = {}
    try:
        if not kp.missing():  # else boot_scenario skips (or fails in CI) with the build command
            kdump.make_dump_disk(disk, kp.vmlinuz, kp.initramfs)
        with boot_scenario(
            KDUMP_GUEST, kernel_id, append=[kdump.CRASHKERNEL], disks=[disk]
        ) as vm:
            apply_stage(vm, KDUMP_GUEST.stages[0])
            release = vm.run("uname -r", check=True).stdout.strip()
            r = vm.run("python3 -m subsecinspect classify /proc/kcore --json --no-bpf",
                       timeout=600)
            assert r.rc == 0, r.stderr
            live = json.loads(r.stdout)
            r = vm.run("python3 -m subsecinspect classify /proc/kcore --json", timeout=900)
            assert r.rc == 0, r.stderr
            live_bpf = json.loads(r.stdout)
            res = kdump.kdump(vm, disk, tmp, LEVELS)
            cores = res.vmcores
        sizes = {name: path.stat().st_size for name, path in cores.items()}
        print(f"{kernel_id}: kdump panic -> QEMU exit {res.panic_to_exit_s:.1f}s; {sizes}")
        for line in res.capture_log.splitlines():
            if line.startswith("@@LEVEL"):
                print(f"{kernel_id}: {line}")
        opened: dict[str, str] = {}
        dumps: dict[str, Result] = {}
        for name, path in cores.items():
            t0 = time.monotonic()
            opened[name] = _drgn_release(path, kp.vmlinux)
            dumps[name] = _classify(path, kp.vmlinux)
            path.unlink()  # deleted right after use
            print(f"{kernel_id} {name}: drgn + classify {time.monotonic() - t0:.1f}s")
    finally:
        kdump.remove_dumps(disk, *cores.values())
    for name, got in dumps.items():
        summary = [(s["class"], s["pages"]) for s in (got.doc or {}).get("summary", [])]
        warnings = (got.doc or {}).get("warnings", [])
        print(f"{kernel_id} {name}: rc {got.rc} {summary} warnings {warnings}")
        if got.rc != 0:
            print(f"{kernel_id} {name}: stderr:\n{got.stderr}")
    yield Run(kernel_id, release, live, live_bpf, dumps, opened, sizes)


def _by_pfn(doc: dict[str, Any]) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [(r["start_pfn"], r["end_pfn"], r["class"], r["evidence"]) for r in doc["ranges"]]


def _compare(live: dict[str, Any], dump: dict[str, Any]) -> list[str]:
    """Differences outside the live-unreadable / dump-not-captured memmap spans."""
    cuts = sorted({r[k] for d in (live, dump) for r in d["ranges"]
                   for k in ("start_pfn", "end_pfn")})
    diffs = []
    for a in cuts[:-1]:
        lr, dr = range_at(live, a), range_at(dump, a)
        (lc, lev), (dc, dev) = (lr["class"], lr["evidence"]), (dr["class"], dr["evidence"])
        if lc == "MEMMAP_UNREADABLE":
            same = dev.get("lifecycle_class") == lev.get("lifecycle_class")
            if dc != "MEMMAP_NOT_CAPTURED" or not same:
                diffs.append(f"{a:#x}: live {lc}/{lev.get('lifecycle_class')} dump {dc}")
        elif lc != dc:
            diffs.append(f"{a:#x}: live {lc} dump {dc}")
    return diffs


def test_drgn_opens_every_level_and_reads_release(run: Run) -> None:
    assert set(run.opened) == {lv.name for lv in LEVELS}
    assert run.release == images.paths(run.kernel).kver
    for name, release in run.opened.items():
        assert release == run.release, name


def test_filtered_kdump_is_smaller_than_unfiltered(run: Run) -> None:
    assert run.sizes[D31] < run.sizes[D0]


def test_all_levels_classify_without_error(run: Run) -> None:
    assert set(run.dumps) == {lv.name for lv in LEVELS}
    for name, res in run.dumps.items():
        assert "Traceback" not in res.stderr, name
        assert res.rc == 0, f"{name}: {res.stderr}"
        assert res.doc is not None
        assert res.doc["target"]["format"] == "kdump"
        assert {r["class"] for r in res.doc["ranges"]} <= ALLOWED


@pytest.mark.parametrize("level", [D23, D0])
def test_agrees_with_live_and_marks_device_memmap_not_captured(run: Run, level: str) -> None:
    doc = run.dumps[level].doc
    assert doc is not None, run.dumps[level].stderr
    assert _compare(run.live, doc) == []
    live_unreadable = sum(b - a for a, b, c, _ in _by_pfn(run.live) if c == "MEMMAP_UNREADABLE")
    not_captured = sum(b - a for a, b, c, _ in _by_pfn(doc) if c == "MEMMAP_NOT_CAPTURED")
    assert live_unreadable > 0
    assert not_captured == live_unreadable


@pytest.mark.parametrize("level", [D23, D0])
def test_live_through_bpf_reads_what_the_kdump_could_not(run: Run, level: str) -> None:
    doc = run.dumps[level].doc
    assert doc is not None, run.dumps[level].stderr
    assert not any(c == "MEMMAP_UNREADABLE" for _, _, c, _ in _by_pfn(run.live_bpf))
    cuts = sorted({r[k] for d in (run.live_bpf, doc) for r in d["ranges"]
                   for k in ("start_pfn", "end_pfn")})
    diffs = []
    for a in cuts[:-1]:
        lr, dr = range_at(run.live_bpf, a), range_at(doc, a)
        want = (dr["evidence"].get("lifecycle_class") if dr["class"] == "MEMMAP_NOT_CAPTURED"
                else dr["class"])
        if lr["class"] != want:
            diffs.append(f"{a:#x}: live {lr['class']} dump {dr['class']}/{want}")
    assert diffs == []


def _answer(res: Result) -> str:
    """What classify said about a dump: its error line, or its degraded labels and warnings."""
    return res.stderr if res.doc is None else degraded_summary(res.doc)


def test_d31_agrees_or_says_what_it_could_not_read(run: Run, bad_input_record: Any) -> None:
    res = run.dumps[D31]
    bad_input_record("kdump with excluded pages (makedumpfile -c -d 31)",
                     f"classify {D31} -s vmlinux --json", _answer(res), res.rc,
                     kernel=run.kernel)  # fmt: skip
    assert res.doc is not None, res.stderr
    diffs = _compare(run.live, res.doc)
    if diffs:
        assert res.doc["warnings"], f"silent disagreement with live: {diffs[:10]}"
