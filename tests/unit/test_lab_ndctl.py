"""Unit tests of lab.ndctl, the one home of the lab's ndctl command lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import ndctl, scale
from lab.scenarios import FREEZE_DESTROY, LEGACY_PMEM, NVDIMM_MIXED

MiB = 1 << 20
VM_IMAGES = Path(ndctl.__file__).resolve().parents[1]


def test_reset_labels_is_the_lab_notes_recipe() -> None:
    assert ndctl.reset_labels() == (
        "ndctl disable-region all && ndctl init-labels -f all && ndctl enable-region all"
    )


def test_create_namespace_command_lines() -> None:
    assert ndctl.create_namespace("fsdax", "dev", 192 * MiB, "A") == (
        "ndctl create-namespace -r region0 -m fsdax --map=dev -s 192M -n A"
    )
    big = 384 * 1024 * MiB + 16 * MiB
    assert ndctl.create_namespace("devdax", "mem", big, region="region1") == (
        "ndctl create-namespace -r region1 -m devdax --map=mem -s 393232M"
    )


@pytest.mark.parametrize(
    ("mode", "map_", "size"),
    [("fsdax", "dev", 192 * MiB + 4096), ("fsdax", "dev", 0), ("sector", "dev", MiB),
     ("fsdax", "ram", MiB)],
)
def test_create_namespace_rejects_what_ndctl_would_misread(mode: str, map_: str, size: int) -> None:
    # before: size // MiB silently dropped a partial MiB
    with pytest.raises(ValueError):
        ndctl.create_namespace(mode, map_, size, "X")


def test_reconfigure_and_destroy() -> None:
    assert ndctl.reconfigure("namespace0.0", "fsdax", "dev") == (
        "ndctl create-namespace -f -e namespace0.0 -m fsdax --map=dev"
    )
    assert ndctl.destroy_namespace() == "ndctl destroy-namespace -f all"
    assert ndctl.destroy_namespace("namespace0.1") == "ndctl destroy-namespace -f namespace0.1"


def test_scenarios_and_scale_use_the_recipes() -> None:
    # nvdimm-mixed is lab-notes §5.1's sequence, command for command
    assert [s.command for s in NVDIMM_MIXED.stages[0].steps] == [
        ndctl.reset_labels(),
        "ndctl create-namespace -r region0 -m fsdax --map=dev -s 192M -n A_fsdax_dev",
        "ndctl create-namespace -r region0 -m devdax --map=mem -s 96M -n B_devdax_mem",
        "ndctl create-namespace -r region0 -m fsdax --map=mem -s 160M -n C_fsdax_mem",
        "ndctl create-namespace -r region0 -m devdax --map=dev -s 272M -n D_devdax_dev",
    ]
    legacy = LEGACY_PMEM.stages[0].steps[0].command
    assert legacy == ndctl.reconfigure("namespace0.0", "fsdax", "dev")
    assert FREEZE_DESTROY.command == "ndctl destroy-namespace -f namespace0.0"
    assert scale.LABELS.command == ndctl.reset_labels()
    step = scale.create_step(("S", "devdax", "dev", 4 * 1024 * MiB + 48 * MiB))
    assert step.command == "ndctl create-namespace -r region0 -m devdax --map=dev -s 4144M -n S"


def test_guest_side_imports_with_the_stdlib_and_the_project_disk_only() -> None:
    # -S -E: no site-packages, no PYTHONPATH, as python3 -m lab.churn runs in the guest
    code = (f"import sys; sys.path.insert(0, {str(VM_IMAGES)!r}); import lab.churn, lab.ndctl; "
            "print(lab.churn.ndctl.create_namespace('fsdax', 'mem', 1 << 24, 'K'))")
    r = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ndctl create-namespace -r region0 -m fsdax --map=mem -s 16M -n K"
