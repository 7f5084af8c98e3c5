"""Lab tests: ``classify`` on dumps of a guest frozen mid-initialisation and mid-teardown.

subsecinspect.lab.freeze holds the guest with QEMU's gdbstub while one 192M fsdax
``--map=dev`` namespace is created (scenario ``mid-init``) or destroyed (``mid-teardown``)
and takes QMP ELF dumps; each dump is classified on the host and deleted.

Ground truth is what gdb saw at the stop:

* at the entry of ``memmap_init_zone_device(zone, start_pfn, nr_pages, pgmap)`` no data page
  is initialised yet: every data PFN is C4 with the frontier at ``pfn_first()``; the altmap
  ``free`` pages were initialised before (move_pfn_range_to_zone) and are C5b;
* stopped at the per-page initialiser for its (N+1)-th page ``page``: exactly the PFNs before
  ``page_to_pfn(page)`` are C2 and the rest C4 (page-exact frontier);
* inside ``memunmap_pages(pgmap)`` after ``percpu_ref_kill()``: the pgmap's range is C4b
  (the altmap reserve stays C5 by arithmetic).

Marker ``lab``.
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

from subsecinspect.lab import freeze, images
from subsecinspect.lab.scenarios import (
    FREEZE_CREATE,
    FREEZE_DESTROY,
    SCENARIOS,
    apply_stage,
    labvm,
)

pytestmark = pytest.mark.lab

KERNELS = tuple(k.kernel for k in SCENARIOS["mid-init"].kernels if k.supported)
IGNORE = 3000
INFO_BLOCK_PAGES = 2  # nd_info_block_reserve(): SZ_8K at the namespace start


@dataclass(frozen=True)
class Frozen:
    facts: dict[str, int]
    function: str
    doc: dict[str, Any]


def _classify(dump: Path, vmlinux: Path) -> dict[str, Any]:
    try:
        r = subprocess.run(
            [sys.executable, "-m", "subsecinspect", "classify", str(dump), "-s", str(vmlinux),
             "--json"],
            capture_output=True, text=True, timeout=600,
        )
    finally:
        dump.unlink(missing_ok=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module", params=KERNELS)
def frozen(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Frozen, Frozen, Frozen]]:
    kernel = request.param
    kp = images.ensure_built(kernel)
    tmp = tmp_path_factory.mktemp(f"frozen-{kernel}")
    init_scn = SCENARIOS["mid-init"]
    with labvm(init_scn, kernel, gdbstub=True, name=f"test-frozen-{kernel}") as vm:  # boots
        apply_stage(vm, init_scn.stages[0])
        run = freeze.mid_init(vm, kp.vmlinux, FREEZE_CREATE.command, tmp, ignore=IGNORE)
        assert run.command_rc == 0, run.command_output
        down = freeze.mid_teardown(vm, kp.vmlinux, FREEZE_DESTROY.command, tmp)
        assert down.command_rc == 0, down.command_output
    entry, per_page = run.freezes
    (teardown,) = down.freezes
    yield tuple(  # type: ignore[misc]
        Frozen(f.facts, f.function, _classify(f.dump, kp.vmlinux))
        for f in (entry, per_page, teardown)
    )


def _ranges(doc: dict[str, Any], start: int, end: int) -> list[tuple[int, int, str]]:
    out = []
    for r in doc["ranges"]:
        a, b = max(start, r["start_pfn"]), min(end, r["end_pfn"])
        if a < b:
            out.append((a, b, r["class"]))
    return out


def _page_pfn(doc: dict[str, Any], page: int) -> int:
    k = doc["kernel"]
    off = page - int(k["vmemmap"], 16)
    assert off % k["struct_page_size"] == 0
    return off // k["struct_page_size"]


def test_entry_all_data_pages_initialising(frozen: tuple[Frozen, Frozen, Frozen]) -> None:
    entry = frozen[0]
    start, nr, pgmap = entry.facts["start_pfn"], entry.facts["nr_pages"], entry.facts["pgmap"]
    doc = entry.doc
    got = _ranges(doc, start, start + nr)
    reserve_end = start + INFO_BLOCK_PAGES
    assert got[0] == (start, reserve_end, "C5_DEV_DRIVER_RESERVED")
    assert got[1][0] == reserve_end and got[1][2] == "C5b_DEV_ALTMAP_MEMMAP"
    assert got[2:] == [(got[1][1], start + nr, "C4_DEV_INITIALISING")]
    ev = next(r["evidence"] for r in doc["ranges"] if r["class"] == "C4_DEV_INITIALISING")
    assert int(ev["pgmap"], 16) == pgmap
    assert ev["frontier_pfn"] == got[1][1]  # pfn_first(): nothing initialised yet


def test_after_n_pages_frontier_is_exact(frozen: tuple[Frozen, Frozen, Frozen]) -> None:
    entry, stop = frozen[0], frozen[1]
    start, nr = entry.facts["start_pfn"], entry.facts["nr_pages"]
    doc = stop.doc
    pfn = _page_pfn(doc, stop.facts["page"])
    got = _ranges(doc, start, start + nr)
    data = [g for g in got if g[2] in ("C2_DEV_VALID", "C4_DEV_INITIALISING")]
    first = data[0][0]
    # gdb's `ignore N` stops a few pages short of N (lab-notes §14), never past it.
    assert 0 < pfn - first <= IGNORE
    assert data == [(first, pfn, "C2_DEV_VALID"), (pfn, start + nr, "C4_DEV_INITIALISING")]


def test_teardown_is_c4b(frozen: tuple[Frozen, Frozen, Frozen]) -> None:
    entry, down = frozen[0], frozen[2]
    start, nr = entry.facts["start_pfn"], entry.facts["nr_pages"]
    got = _ranges(down.doc, start, start + nr)
    assert got[0] == (start, start + INFO_BLOCK_PAGES, "C5_DEV_DRIVER_RESERVED")
    assert got[1:] == [(start + INFO_BLOCK_PAGES, start + nr, "C4b_DEV_TEARDOWN")]
    ev = next(r["evidence"] for r in down.doc["ranges"] if r["class"] == "C4b_DEV_TEARDOWN")
    assert int(ev["pgmap"], 16) == down.facts["pgmap"]
