"""Lab tests of the CLI in a guest: errors, saved snapshots, explain vs the kernel's answers.

On the nvdimm-mixed layout: ``classify --save`` in the guest, then on the host ``explain``
for PFNs at the edges and middle of every classified range of that saved snapshot. What
explain reports for the kernel's predicates (``pfn_valid``, ``pfn_to_online_page``,
``get_dev_pagemap``) must equal what the running kernel itself answers, asked through the
ground-truth module tests/kmod/subsec_gt (lab.groundtruth).

Marker ``lab``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import groundtruth, images
from lab.groundtruth import GroundTruth
from lab.scenarios import SCENARIOS, apply, labvm

pytestmark = pytest.mark.lab

SCENARIO = SCENARIOS["nvdimm-mixed"]
KERNELS = tuple(k.kernel for k in SCENARIO.kernels if k.supported)
# LAB_KERNELS="6.1 6.12" narrows the kernels, as everywhere in tests/vm.
KERNELS = tuple(k for k in KERNELS if k in (os.environ.get("LAB_KERNELS", "").split() or KERNELS))


@dataclass(frozen=True)
class Guest:
    kernel: str
    snapshot: Path
    live: dict[str, Any]
    offline: dict[str, Any]
    nonroot: tuple[int, str, str]
    truth: dict[int, GroundTruth]


def _pfns(doc: dict[str, Any]) -> list[int]:
    out: set[int] = set()
    for r in doc["ranges"]:
        a, b = r["start_pfn"], r["end_pfn"]
        if r["class"] == "HOLE" and b - a > 1 << 20:
            out.update((a, b - 1))
            continue
        out.update((a, (a + b) // 2, b - 1))
    return sorted(out)


@pytest.fixture(scope="module", params=KERNELS)
def guest(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    kernel = request.param
    images.ensure_built(kernel)
    ko = groundtruth.build(kernel)
    tmp = tmp_path_factory.mktemp(f"cli-{kernel}")
    with labvm(SCENARIO, kernel, project=True, name=f"test-cli-{kernel}") as vm:  # boots
        apply(vm, SCENARIO)
        r = vm.run(
            "setpriv --reuid=65534 --regid=65534 --clear-groups "
            "python3 -m subsecinspect classify /proc/kcore --json",
            timeout=300,
        )
        nonroot = (r.rc, r.stdout, r.stderr)
        r = vm.run("python3 -m subsecinspect classify --json --save /tmp/s.json", timeout=600)
        assert r.rc == 0, r.stderr
        live = json.loads(r.stdout)
        r = vm.run("python3 -m subsecinspect classify /tmp/s.json --json", timeout=300)
        assert r.rc == 0, r.stderr
        offline = json.loads(r.stdout)
        snap = tmp / "s.json"
        snap.write_bytes(vm.get("/tmp/s.json"))
        groundtruth.load(vm, ko)
        truth = {t.pfn: t for t in groundtruth.query(vm, _pfns(live))}
    yield Guest(kernel, snap, live, offline, nonroot, truth)


def test_non_root_is_a_one_line_error_exit_3(guest: Guest, bad_input_record: Any) -> None:
    rc, out, err = guest.nonroot
    bad_input_record("/proc/kcore as a non-root user", "classify /proc/kcore --json as uid "
                     "65534 in the guest", err, rc, kernel=guest.kernel)
    assert rc == 3
    assert out == ""
    assert err.strip() == (
        "subsecinspect: error: cannot open /proc/kcore: permission denied (run as root)"
    )


def test_saved_snapshot_classifies_the_same_offline(guest: Guest) -> None:
    assert guest.offline["ranges"] == guest.live["ranges"]
    assert guest.offline["target"]["format"] == "snapshot"
    assert guest.live["target"]["format"] == "kcore"


def _explain(snapshot: Path, pfn: int) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "subsecinspect", "explain", f"pfn:{pfn:#x}", str(snapshot),
         "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_explain_predicates_match_the_kernel(guest: Guest) -> None:
    assert guest.truth, "the ground-truth module answered nothing"
    mismatches = []
    for pfn, t in sorted(guest.truth.items()):
        doc = _explain(guest.snapshot, pfn)
        assert doc["verdict"]["start_pfn"] <= pfn < doc["verdict"]["end_pfn"]
        ans = {p["name"].split(" ")[0]: p["answer"] for p in doc["predicates"]}
        want = {
            "pfn_valid": "1" if t.pfn_valid else "0",
            "pfn_to_online_page": "page" if t.online else "NULL",
            "get_dev_pagemap": f"{t.pgmap:#x}" if t.pgmap else "NULL",
        }
        got = {k: ans.get(k) for k in want}
        if got != want:
            mismatches.append((hex(pfn), doc["verdict"]["class"], got, want))
    assert mismatches == []


def test_dev_valid_pages_are_zone_device_in_the_kernel(guest: Guest) -> None:
    checked = 0
    for pfn, t in guest.truth.items():
        cls = next(r["class"] for r in guest.live["ranges"]
                   if r["start_pfn"] <= pfn < r["end_pfn"])
        if cls == "C2_DEV_VALID":
            assert t.zone == "Device", (hex(pfn), t)
            assert t.pgmap is not None and t.page_pgmap == t.pgmap, (hex(pfn), t)
            checked += 1
    assert checked >= 3
