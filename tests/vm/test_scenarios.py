"""Lab tests: every kernel boots every scenario it supports, and the layout is as declared.

The layout is read inside the guest (``ndctl list -N``, ``/proc/iomem``,
``/sys/devices/system/memory``) after each stage and compared with the declaration in
vm-images/lab/scenarios.py. The gdbstub scenarios (mid-init, mid-teardown) are checked in
tests/vm/test_classify_frozen.py, on the same freeze run whose dumps it classifies (their
layouts before and after, and the kernel structures in the frozen dumps read with drgn).

Marker ``lab``; parametrised over the kernels of the matrix (``LAB_KERNELS`` narrows it).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab import images
from lab.scenarios import SCENARIOS, Observed, Scenario, apply, check_layout

pytestmark = pytest.mark.lab

LAYOUT_SCENARIOS = ("nvdimm-mixed", "legacy-pmem", "dimm-offline", "kmem")


@pytest.fixture(scope="module", params=LAYOUT_SCENARIOS)
def applied(
    request: pytest.FixtureRequest, kernel_id: str, boot_scenario: Any
) -> tuple[Scenario, tuple[Observed, ...], str]:
    sc = SCENARIOS[request.param]
    with boot_scenario(sc, kernel_id) as vm:
        t0 = time.monotonic()
        observed = apply(vm, sc)
        print(f"{sc.name} on {kernel_id}: stages applied in {time.monotonic() - t0:.1f}s")
        release = vm.run("uname -r", check=True).stdout.strip()
    return sc, observed, release


def test_guest_runs_the_matrix_kernel(applied: Any, kernel_id: str) -> None:
    assert applied[2] == images.paths(kernel_id).kver


def test_every_stage_has_the_declared_layout(applied: Any) -> None:
    sc, observed, _ = applied
    assert [o.stage for o in observed] == [s.name for s in sc.stages]
    for obs in observed:
        assert check_layout(obs, sc) == [], f"stage {obs.stage}"
