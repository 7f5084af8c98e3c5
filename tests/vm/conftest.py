"""Fixtures of the lab tests (marker ``lab``): kernels of the matrix, prerequisites, scenario VMs.

* ``kernel_id``: every test that takes it runs once per kernel of vm-images/kernels.toml, or of
  ``LAB_KERNELS="6.1 6.12"`` when that is set (the same variable scripts/test.sh uses). A
  module that sets ``LAB_TIER = "edges"`` runs on the oldest and the newest kernel only,
  unless ``LAB_MATRIX=full`` (vm-images/README.md, "Tiers": the suite's 60-minute budget).
* :func:`require_lab`: qemu-system-x86_64 and the kernel's lab cache must be there. In CI
  (``CI=true``) a missing prerequisite FAILS the test; elsewhere it is skipped with the command
  that builds the cache.
* :func:`scenario_vm`: boots one :class:`~lab.vm.LabVM` configured for a scenario
  on a kernel (one VM per test module and kernel), and always stops it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from lab import images
from lab.matrix import load_matrix
from lab.scenarios import Scenario, labvm

__all__ = ("in_ci", "lab_kernels", "require_lab", "scenario_vm")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def lab_kernels() -> tuple[str, ...]:
    """The kernel ids under test: ``$LAB_KERNELS`` (space separated) or the whole matrix."""
    ids = load_matrix().ids
    wanted = os.environ.get("LAB_KERNELS", "").split()
    unknown = [k for k in wanted if k not in ids]
    if unknown:
        raise pytest.UsageError(
            f"LAB_KERNELS names unknown kernels {unknown}; the matrix has {ids}"
        )
    return tuple(wanted) or ids


def _missing(kernel_id: str, tools: tuple[str, ...]) -> list[str]:
    problems = [
        f"{t} not found on PATH" for t in ("qemu-system-x86_64", *tools) if not shutil.which(t)
    ]
    missing = images.paths(kernel_id).missing()
    if missing:
        problems.append(f"the lab cache of kernel {kernel_id} is incomplete ({missing[0]})")
    return problems


def require_lab(kernel_id: str, tools: tuple[str, ...] = ()) -> None:
    """Fail (CI) or skip (elsewhere, saying how to build) when the lab cannot run."""
    problems = _missing(kernel_id, tools)
    if not problems:
        return
    msg = (
        "; ".join(problems)
        + f" -- build it with: python -m lab.images build --kernel {kernel_id}"
        + " (host tools: bash scripts/setup-host.sh)"
    )
    if in_ci():
        pytest.fail(f"lab prerequisite missing in CI: {msg}", pytrace=False)
    pytest.skip(msg)


def require_support(scenario: Scenario, kernel_id: str) -> None:
    """A scenario that declares a kernel unsupported is skipped with the declared reason."""
    sup = scenario.support(kernel_id)
    if not sup.supported:
        pytest.skip(f"{scenario.name} is not supported on {kernel_id}: {sup.reason}")


@contextmanager
def scenario_vm(scenario: Scenario, kernel_id: str, **extra: Any) -> Iterator[Any]:
    """A started VM for ``scenario`` on ``kernel_id``; prints the boot wall time."""
    require_lab(kernel_id, ("gdb",) if extra.get("gdbstub") else ())
    require_support(scenario, kernel_id)
    t0 = time.monotonic()
    vm = labvm(scenario, kernel_id, **extra)
    with vm:
        print(f"{scenario.name} on {kernel_id}: booted in {time.monotonic() - t0:.1f}s")
        yield vm


def tier_kernels(module: object) -> tuple[str, ...]:
    """:func:`lab_kernels`, narrowed to the oldest and newest kernel for a module whose
    ``LAB_TIER`` is ``"edges"`` (unless ``LAB_KERNELS`` names kernels or ``LAB_MATRIX=full``)."""
    kernels = lab_kernels()
    if (getattr(module, "LAB_TIER", "") == "edges" and not os.environ.get("LAB_KERNELS")
            and os.environ.get("LAB_MATRIX", "") != "full" and len(kernels) > 2):
        return (kernels[0], kernels[-1])
    return kernels


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_id" in metafunc.fixturenames:
        metafunc.parametrize("kernel_id", tier_kernels(metafunc.module), scope="module")


@pytest.fixture(scope="session")
def boot_scenario() -> Any:
    """:func:`scenario_vm` as a fixture (test modules do not import conftest)."""
    return scenario_vm
