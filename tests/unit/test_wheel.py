"""The wheel built from pyproject.toml holds the tool and its BPF sources, and no lab.

The lab (vm-images/lab) only works from a checkout: it finds kernels.toml, tests/kmod and
scripts/ beside itself. A wheel that carried it would install a package named ``lab`` that
cannot run. Built by :func:`lab.wheel.build_wheel` (no build isolation, no network).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lab.wheel import build_wheel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def wheel_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_wheel_holds_no_lab(wheel_files: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_files}
    assert all(t == "subsecinspect" or t.startswith("subsecinspect-0") for t in tops), tops
    assert not [n for n in wheel_files if "/lab/" in n or n.startswith("lab/")]
    assert not [n for n in wheel_files if n.endswith((".sh", ".toml")) or "kmod" in n]


def test_wheel_holds_every_module_of_the_package(wheel_files: list[str]) -> None:
    want = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "subsecinspect").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert want, "no package modules found"
    assert want <= set(wheel_files), sorted(want - set(wheel_files))


def test_wheel_holds_every_bpf_source(wheel_files: list[str]) -> None:
    """The front ends load their C from share/subsecinspect/bpf (probes.bcc_env)."""
    want = {p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h")}
    shipped = {n.rsplit("/", 1)[1] for n in wheel_files if "/share/subsecinspect/bpf/" in n}
    assert want, "no BPF sources found"
    assert shipped == want


def test_wheel_declares_the_drgn_plugin(wheel: Path) -> None:
    """drgn finds the plugin through this entry point (``drgn.plugins`` group)."""
    with zipfile.ZipFile(wheel) as z:
        (ep,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = z.read(ep).decode()
    assert "[drgn.plugins]\nsubsecinspect = subsecinspect.drgn_plugin" in text
