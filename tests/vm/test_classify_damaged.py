"""Lab tests: damaged vmcores give one-line errors or labelled, warned results, never tracebacks.

A QMP ELF dump of the nvdimm-mixed guest is taken once per kernel; each case overwrites a
kernel structure inside the dump (found with drgn through the dump's own page tables),
classifies it on the host and restores the bytes. Nothing is committed: the corpus is made
here and the dump is deleted at the end.

| case | damage | expected |
|---|---|---|
| zero_root_table | the mem_section root pointers | exit 6 (ReadError), one line |
| random_root0 | the 128 mem_sections of root 0 | exit 0, warnings |
| zero_usage | usage of the first pgmap section | exit 0, "subsection map ... lacks" warning |
| random_pgmap, zero_pgmap | last dev_pagemap | exit 0, "is damaged" warning, span CORRUPT |
| zero_xa_node | the pgmap_array root node | exit 0, "pgmap_array node ... damaged" warning |
| truncated | the dump cut in half (a copy) | exit 3, "truncated vmcore" |
| wrong_vmlinux | another kernel's vmlinux | exit 4, "does not match" |

Marker ``lab``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from classdoc import degraded_summary

from lab import images
from lab.scenarios import SCENARIOS, apply, labvm

pytestmark = pytest.mark.lab

SCENARIO = SCENARIOS["nvdimm-mixed"]
KERNELS = ("5.10", "6.1", "6.12", "7.2")
# LAB_KERNELS="6.1 6.12" narrows the kernels, as everywhere in tests/vm.
KERNELS = tuple(k for k in KERNELS if k in (os.environ.get("LAB_KERNELS", "").split() or KERNELS))
WRONG = {"5.10": "6.1", "6.1": "6.12", "6.12": "7.2", "7.2": "6.1"}


@dataclass(frozen=True)
class Outcome:
    rc: int
    stderr: str
    doc: dict[str, Any] | None


def _run(dump: Path, vmlinux: Path) -> Outcome:
    r = subprocess.run(
        [sys.executable, "-m", "subsecinspect", "classify", str(dump), "-s", str(vmlinux),
         "--json"],
        capture_output=True, text=True, timeout=600,
    )
    return Outcome(r.returncode, r.stderr, json.loads(r.stdout) if r.returncode == 0 else None)


def _targets(dump: Path, vmlinux: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Physical (address, length, fill) per case; fill None = random bytes."""
    import drgn
    from drgn import Object, sizeof
    from drgn.helpers.linux.mm import follow_phys

    prog = drgn.Program()
    prog.set_core_dump(str(dump))
    prog.load_debug_info([str(vmlinux)])
    mm = prog["init_mm"].address_of_()

    def phys(addr: int) -> int:
        return follow_phys(mm, addr).value_()

    table = prog["mem_section"].value_()
    root0 = prog.read_u64(table)
    xa_head = prog["pgmap_array"].xa_head.value_()
    pgmap_t = prog.type("struct dev_pagemap")
    from drgn.helpers.linux.xarray import xa_for_each

    pgmaps = sorted(
        ((i, e.value_()) for i, e in xa_for_each(prog["pgmap_array"].address_of_())),
    )
    first_pfn, _ = pgmaps[0]
    _, last_pgmap = pgmaps[-1]
    sec_nr = first_pfn >> (prog["SECTION_SIZE_BITS"].value_() - prog["PAGE_SHIFT"].value_())
    sec = Object(prog, "struct mem_section *", root0)[sec_nr % prog["SECTIONS_PER_ROOT"].value_()]
    usage_t = prog.type("struct mem_section_usage")
    assert xa_head & 3 == 2, "pgmap_array root is not a node"
    return {
        "zero_root_table": (phys(table), 8, b"\0"),
        "random_root0": (phys(root0), 128 * sizeof(prog.type("struct mem_section")), None),
        "zero_usage": (phys(sec.usage.value_()), sizeof(usage_t), b"\0"),
        "random_pgmap": (phys(last_pgmap), sizeof(pgmap_t), None),
        "zero_pgmap": (phys(last_pgmap), sizeof(pgmap_t), b"\0"),
        "zero_xa_node": (phys(xa_head - 2), sizeof(prog.type("struct xa_node")), b"\0"),
    }


def _file_offset(dump: Path, paddr: int) -> int:
    with dump.open("rb") as f:
        hdr = f.read(64)
        (phoff,) = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, off, _, pa, filesz, _ = struct.unpack_from("<IIQQQQQ", ph, i * phentsize)
        if p_type == 1 and pa <= paddr < pa + filesz:
            return off + paddr - pa
    raise AssertionError(f"physical {paddr:#x} not in the dump")


@pytest.fixture(scope="module", params=KERNELS)
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Outcome]]:
    kernel = request.param
    kp = images.ensure_built(kernel)
    wrong = images.ensure_built(WRONG[kernel])
    tmp = tmp_path_factory.mktemp(f"damaged-{kernel}")
    dump = tmp / "guest.vmcore"
    half = tmp / "half.vmcore"
    try:
        with labvm(SCENARIO, kernel, name=f"test-damaged-{kernel}") as vm:
            apply(vm, SCENARIO)
            vm.dump(dump, "elf")
        dump.chmod(0o600)
        out: dict[str, Outcome] = {"intact": _run(dump, kp.vmlinux)}
        for name, (paddr, length, fill) in _targets(dump, kp.vmlinux).items():
            off = _file_offset(dump, paddr)
            with dump.open("r+b") as f:
                f.seek(off)
                orig = f.read(length)
                f.seek(off)
                f.write(fill * length if fill is not None else os.urandom(length))
            try:
                out[name] = _run(dump, kp.vmlinux)
            finally:
                with dump.open("r+b") as f:
                    f.seek(off)
                    f.write(orig)
        with dump.open("rb") as src, half.open("wb") as dst:
            dst.write(src.read(dump.stat().st_size // 2))
        out["truncated"] = _run(half, kp.vmlinux)
        out["wrong_vmlinux"] = _run(dump, wrong.vmlinux)
    finally:
        dump.unlink(missing_ok=True)
        half.unlink(missing_ok=True)
    for name, o in out.items():
        print(f"{kernel} {name}: rc {o.rc} {o.stderr.strip()[:300]!r}")
    yield out


#: What each case did to the dump, for the README table (scripts/bad_input_table.py).
TRIED = {
    "intact": "classify DUMP -s vmlinux --json, ELF dump of nvdimm-mixed, undamaged",
    "zero_root_table": "the same, mem_section root pointers zeroed",
    "random_root0": "the same, random bytes over the 128 mem_sections of root 0",
    "zero_usage": "the same, usage of the first pgmap section zeroed",
    "random_pgmap": "the same, random bytes over the last dev_pagemap",
    "zero_pgmap": "the same, the last dev_pagemap zeroed",
    "zero_xa_node": "the same, the pgmap_array root xa_node zeroed",
    "truncated": "the same dump cut in half",
    "wrong_vmlinux": "the dump with another kernel's vmlinux (-s)",
}
def _answer(o: Outcome) -> str:
    """What the tool said: its error line, or the labels and warnings of a degraded result."""
    if o.doc is None:
        return o.stderr
    answer = degraded_summary(o.doc)
    if "Traceback" in o.stderr:  # flagged by the recorder; the test fails on it
        answer += "; " + o.stderr
    return answer


def _no_traceback(o: Outcome) -> None:
    assert "Traceback" not in o.stderr
    for line in o.stderr.strip().splitlines():
        assert line.startswith(("subsecinspect: error: ", "subsecinspect: warning: ")), line


def test_every_case_is_clean(
    outcomes: dict[str, Outcome], request: pytest.FixtureRequest, bad_input_record: Any
) -> None:
    kernel = request.node.callspec.params["outcomes"]
    for name, o in outcomes.items():
        tried = TRIED.get(name, name).replace("another kernel's", f"{WRONG[kernel]}'s")
        bad_input_record(name.replace("_", " "), tried, _answer(o), o.rc, kernel=kernel)
    for name, o in outcomes.items():
        _no_traceback(o)
        assert o.rc in (0, 3, 4, 6), name


def test_intact_dump_has_no_warnings(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["intact"]
    assert o.rc == 0 and o.doc is not None
    assert o.doc["warnings"] == []


def test_zeroed_root_table_is_a_read_error(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["zero_root_table"]
    assert o.rc == 6
    assert o.stderr.strip().splitlines()[-1].startswith("subsecinspect: error: no present section")


def test_random_root_is_warned(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["random_root0"]
    assert o.rc == 0 and o.doc is not None
    assert o.doc["warnings"]


def test_zeroed_usage_is_warned(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["zero_usage"]
    assert o.rc == 0 and o.doc is not None
    assert any("subsection map 0x0 lacks" in w for w in o.doc["warnings"])
    # A clear subsection bit inside a complete range with a live ref cannot happen in a healthy
    # kernel: the damaged usage is labelled, not passed off as C4 (case 4).
    classes = {r["class"] for r in o.doc["ranges"]}
    assert "CORRUPT" in classes
    assert "C4_DEV_INITIALISING" not in classes


@pytest.mark.parametrize("case", ["random_pgmap", "zero_pgmap"])
def test_damaged_pgmap_is_warned_and_corrupt(outcomes: dict[str, Outcome], case: str) -> None:
    o, intact = outcomes[case], outcomes["intact"]
    assert o.rc == 0 and o.doc is not None and intact.doc is not None
    assert any("is damaged" in w for w in o.doc["warnings"])
    # The last pgmap's data pages are C2 in the intact dump; now none of them may be.
    last = max(
        (r for r in intact.doc["ranges"] if r["class"] == "C2_DEV_VALID"),
        key=lambda r: r["start_pfn"],
    )
    got = {r["class"] for r in o.doc["ranges"]
           if r["start_pfn"] < last["end_pfn"] and r["end_pfn"] > last["start_pfn"]}
    assert got == {"CORRUPT"}


def test_damaged_xarray_is_warned(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["zero_xa_node"]
    assert o.rc == 0 and o.doc is not None
    assert any("pgmap_array node" in w and "damaged" in w for w in o.doc["warnings"])
    # ZONE_DEVICE ranges never get memory blocks: PFNs that lost their pgmap must not be
    # passed off as offline RAM (case 1).
    classes = {r["class"] for r in o.doc["ranges"]}
    assert "CORRUPT" in classes
    assert "C1_OFFLINE_RAM" not in classes


def test_truncated_dump_is_a_target_error(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["truncated"]
    assert o.rc == 3
    assert o.stderr.strip().splitlines() == [
        next(line for line in o.stderr.splitlines() if "truncated vmcore" in line)
    ]


def test_wrong_vmlinux_is_a_debuginfo_error(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["wrong_vmlinux"]
    assert o.rc == 4
    assert "does not match" in o.stderr
    assert len(o.stderr.strip().splitlines()) == 1
